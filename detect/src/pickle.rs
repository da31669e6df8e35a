//! NumPy arrays saved with Python's `pickle` (`pickle.dump(array, f)`, protocols 2 to 5), the
//! layout some labelled data sets ship in. Read without running anything: a pickle is a
//! program for a stack machine that may call any Python function, so this reads only the
//! opcodes such a file uses and accepts only the one call shape NumPy writes
//! (`numpy.core.multiarray._reconstruct` with a `numpy.dtype` state); anything else is an
//! error naming the byte offset.

use crate::eval::EvalError;

/// A value on the pickle machine's stack, as far as an array needs.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    /// A range of the input: raw array bytes are not copied until the end.
    Bytes(usize, usize),
    Tuple(Vec<Value>),
    /// `module.name`.
    Global(String),
    /// A call: the callable's name, its arguments and the state `BUILD` set on it.
    Object {
        class: String,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
}

/// A pickled NumPy array: its shape and its elements in C order as numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// One or two dimensions.
    pub shape: Vec<usize>,
    /// `shape`'s product of elements, row after row.
    pub values: Vec<f64>,
}

/// Reads one pickled NumPy array of `f8`, `f4`, `i8`, `i4`, `u1` or `b1` elements
/// (little-endian), one or two dimensions, C order; `origin` names the file in errors.
pub fn parse_array(bytes: &[u8], origin: &str) -> Result<Array, EvalError> {
    let value = run(bytes).map_err(|(at, message)| EvalError { at: format!("{origin}: byte {at}"), message })?;
    let err = |message: String| EvalError { at: origin.to_owned(), message };
    let Value::Object { class, args: _, state: Some(state) } = value else {
        return Err(err("the pickle does not hold a NumPy array".into()));
    };
    if !class.ends_with("multiarray._reconstruct") {
        return Err(err(format!("the pickle holds a {class}, not a NumPy array")));
    }
    let Value::Tuple(state) = *state else {
        return Err(err("the array's state is not a tuple".into()));
    };
    let [Value::Int(_), Value::Tuple(shape), dtype, Value::Bool(fortran), Value::Bytes(from, to)] = state.as_slice()
    else {
        return Err(err("the array's state is not (version, shape, dtype, fortran order, data)".into()));
    };
    if *fortran {
        return Err(err("a Fortran-ordered array is not supported".into()));
    }
    let shape: Vec<usize> = shape
        .iter()
        .map(|d| match d {
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| err("the array's shape is not a tuple of lengths".into()))?;
    if shape.is_empty() || shape.len() > 2 {
        return Err(err(format!("an array of {} dimensions is not supported (1 or 2)", shape.len())));
    }
    let Value::Object { class, args, state } = dtype else {
        return Err(err("the array's element type is not a numpy.dtype".into()));
    };
    let kind = match (class.as_str(), args.first()) {
        ("numpy.dtype", Some(Value::Str(k))) => k.as_str(),
        _ => return Err(err("the array's element type is not a numpy.dtype".into())),
    };
    let order = match state.as_deref() {
        Some(Value::Tuple(s)) => match s.get(1) {
            Some(Value::Str(o)) => o.as_str(),
            _ => "|",
        },
        _ => "|",
    };
    let (size, read): (usize, fn(&[u8]) -> f64) = match (kind, order) {
        ("f8", "<") => (8, |b| f64::from_le_bytes(b.try_into().unwrap_or_default())),
        ("f4", "<") => (4, |b| f64::from(f32::from_le_bytes(b.try_into().unwrap_or_default()))),
        ("i8", "<") => (8, |b| i64::from_le_bytes(b.try_into().unwrap_or_default()) as f64),
        ("i4", "<") => (4, |b| f64::from(i32::from_le_bytes(b.try_into().unwrap_or_default()))),
        ("u1" | "b1", _) => (1, |b| f64::from(b[0])),
        _ => {
            return Err(err(format!(
                "element type {order}{kind} is not supported (little-endian f8, f4, i8, i4, u1, b1)"
            )));
        }
    };
    let count = shape.iter().try_fold(1_usize, |n, d| n.checked_mul(*d));
    let data = &bytes[*from..*to];
    if count.and_then(|c| c.checked_mul(size)) != Some(data.len()) {
        return Err(err(format!(
            "shape {shape:?} of {size}-byte elements does not match {} bytes of data",
            data.len()
        )));
    }
    Ok(Array { shape, values: data.chunks_exact(size).map(read).collect() })
}

/// The most values on the stack or in the memo: an array's pickle holds a few dozen.
const MAX_STACK: usize = 1 << 12;

/// The most opcodes read: an array's pickle has under a hundred. This also bounds how deep
/// tuples nest, so dropping or copying a value never recurses far.
const MAX_OPS: usize = 1 << 12;

/// Runs the opcodes an array's pickle uses; returns what `STOP` finds on the stack, or the
/// offset and what is wrong there.
fn run(b: &[u8]) -> Result<Value, (usize, String)> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: Vec<Option<Value>> = Vec::new();
    let mut at = 0;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], (usize, String)> {
        let s = b.get(*at..at.saturating_add(n)).ok_or((*at, format!("cut short: {n} more bytes expected")))?;
        *at += n;
        Ok(s)
    };
    let le = |s: &[u8]| s.iter().rev().fold(0_u64, |n, x| (n << 8) | u64::from(*x));
    let line = |at: &mut usize| -> Result<String, (usize, String)> {
        let rest = b.get(*at..).unwrap_or_default();
        let n = rest.iter().position(|c| *c == b'\n').ok_or((*at, "a name without its end of line".to_owned()))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| (*at, "a name that is not text".to_owned()))?;
        *at += n + 1;
        Ok(s.to_owned())
    };
    let pop = |stack: &mut Vec<Value>, at: usize| stack.pop().ok_or((at, "the stack is empty".to_owned()));
    let to_mark = |stack: &mut Vec<Value>, at: usize| -> Result<Vec<Value>, (usize, String)> {
        let m = stack.iter().rposition(|v| *v == Value::Mark).ok_or((at, "no mark on the stack".to_owned()))?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    for _ in 0..MAX_OPS {
        let op_at = at;
        let op = *take(&mut at, 1)?.first().unwrap_or(&0);
        match op {
            0x80 => {
                let v = take(&mut at, 1)?[0];
                if !(2..=5).contains(&v) {
                    return Err((op_at, format!("pickle protocol {v} is not supported (2 to 5)")));
                }
            }
            0x95 => {
                take(&mut at, 8)?; // FRAME: a length hint
            }
            b'c' => {
                let module = line(&mut at)?;
                let name = line(&mut at)?;
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = pop(&mut stack, op_at)?;
                let module = pop(&mut stack, op_at)?;
                let (Value::Str(m), Value::Str(n)) = (module, name) else {
                    return Err((op_at, "a global named by something other than text".into()));
                };
                stack.push(Value::Global(format!("{m}.{n}")));
            }
            b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'q' => le(take(&mut at, 1)?),
                    b'r' => le(take(&mut at, 4)?),
                    _ => memo.len() as u64,
                };
                let index = usize::try_from(index)
                    .ok()
                    .filter(|i| *i < MAX_STACK)
                    .ok_or((op_at, "memo index too large".to_owned()))?;
                let top = stack.last().cloned().ok_or((op_at, "the stack is empty".to_owned()))?;
                if memo.len() <= index {
                    memo.resize(index + 1, None);
                }
                memo[index] = Some(top);
            }
            b'h' | b'j' => {
                let index = le(take(&mut at, if op == b'h' { 1 } else { 4 })?);
                let v = usize::try_from(index)
                    .ok()
                    .and_then(|i| memo.get(i).cloned().flatten())
                    .ok_or((op_at, format!("memo entry {index} was never stored")))?;
                stack.push(v);
            }
            b'K' => stack.push(Value::Int(le(take(&mut at, 1)?) as i64)),
            b'M' => stack.push(Value::Int(le(take(&mut at, 2)?) as i64)),
            b'J' => {
                let s = take(&mut at, 4)?;
                stack.push(Value::Int(i64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))));
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'X' | 0x8c => {
                let n = if op == b'X' { le(take(&mut at, 4)?) } else { le(take(&mut at, 1)?) };
                let s = take(&mut at, usize::try_from(n).unwrap_or(usize::MAX))?;
                let s = std::str::from_utf8(s).map_err(|_| (op_at, "a string that is not UTF-8".to_owned()))?;
                stack.push(Value::Str(s.to_owned()));
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => le(take(&mut at, 4)?),
                    b'C' => le(take(&mut at, 1)?),
                    _ => le(take(&mut at, 8)?),
                };
                let from = at;
                take(&mut at, usize::try_from(n).unwrap_or(usize::MAX))?;
                stack.push(Value::Bytes(from, at));
            }
            b'(' => stack.push(Value::Mark),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = to_mark(&mut stack, op_at)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n || stack[stack.len() - n..].contains(&Value::Mark) {
                    return Err((op_at, format!("a tuple of {n} without {n} values")));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'R' => {
                let args = pop(&mut stack, op_at)?;
                let callable = pop(&mut stack, op_at)?;
                let (Value::Global(class), Value::Tuple(args)) = (callable, args) else {
                    return Err((op_at, "a call of something other than a named global".into()));
                };
                if !matches!(
                    class.as_str(),
                    "numpy.core.multiarray._reconstruct" | "numpy._core.multiarray._reconstruct" | "numpy.dtype"
                ) {
                    return Err((op_at, format!("a call of {class}, which an array's pickle does not make")));
                }
                stack.push(Value::Object { class, args, state: None });
            }
            b'b' => {
                let new = pop(&mut stack, op_at)?;
                match stack.last_mut() {
                    Some(Value::Object { state, .. }) => *state = Some(Box::new(new)),
                    _ => return Err((op_at, "a state set on something other than an object".into())),
                }
            }
            b'.' => return pop(&mut stack, op_at),
            other => return Err((op_at, format!("opcode 0x{other:02x} is not one an array's pickle uses"))),
        }
        if stack.len() > MAX_STACK {
            return Err((op_at, "more values on the stack than an array's pickle holds".into()));
        }
    }
    Err((at, format!("no end after {MAX_OPS} opcodes: not an array's pickle")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::synth::Rng;

    /// What `pickle.dumps(numpy.array(...), protocol=3)` writes, built opcode by opcode.
    fn pickled(kind: &str, shape: &[u16], data: &[u8]) -> Vec<u8> {
        let mut b = b"\x80\x03cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02C\x01bq\x03\x87q\x04Rq\x05(K\x01".to_vec();
        for d in shape {
            b.push(b'M');
            b.extend(d.to_le_bytes());
        }
        b.push(if shape.len() == 1 { 0x85 } else { 0x86 });
        b.extend(b"q\x06cnumpy\ndtype\nq\x07X");
        b.extend(u32::try_from(kind.len()).unwrap().to_le_bytes());
        b.extend(kind.as_bytes());
        b.extend(b"q\x08K\x00K\x01\x87q\tRq\n(K\x03X\x01\x00\x00\x00<q\x0bNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x0cb\x89B");
        b.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
        b.extend(data);
        b.extend(b"q\rtq\x0eb.");
        b
    }

    #[test]
    fn arrays_read_as_numpy_wrote_them() {
        let f4: Vec<u8> = [0.5_f32, 1.0, -2.0, 4.0, 8.0, 16.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_array(&pickled("f4", &[2, 3], &f4), "x.pkl").unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.values, [0.5, 1.0, -2.0, 4.0, 8.0, 16.0]);
        let f8: Vec<u8> = [1.0_f64, 0.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_array(&pickled("f8", &[3], &f8), "y.pkl").unwrap();
        assert_eq!((a.shape, a.values), (vec![3], vec![1.0, 0.0, 1.0]));
    }

    #[test]
    fn what_is_not_an_array_is_named_and_nothing_is_called() {
        let e = |b: &[u8]| parse_array(b, "x.pkl").unwrap_err().to_string();
        let f8: Vec<u8> = [1.0_f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(e(&pickled("f8", &[3], &f8)), "x.pkl: shape [3] of 8-byte elements does not match 16 bytes of data");
        let c16 = e(&pickled("c16", &[1], &[0; 16]));
        assert!(c16.contains("element type <c16 is not supported"), "{c16}");
        // os.system("id"), as a hostile pickle would ask.
        assert_eq!(
            e(b"\x80\x03cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."),
            "x.pkl: byte 30: a call of posix.system, which an array's pickle does not make"
        );
        assert_eq!(e(b"\x80\x01."), "x.pkl: byte 0: pickle protocol 1 is not supported (2 to 5)");
        assert_eq!(e(b"\x80\x03K\x01."), "x.pkl: the pickle does not hold a NumPy array");
        assert_eq!(e(b"\x80\x03B\xff\xff\xff\x7f"), "x.pkl: byte 7: cut short: 2147483647 more bytes expected");
        assert_eq!(e(b"\x80\x03S'x'\n."), "x.pkl: byte 2: opcode 0x53 is not one an array's pickle uses");
    }

    #[test]
    fn hostile_bytes_and_every_cut_are_errors_never_panics() {
        let f8: Vec<u8> = [1.0_f64, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let good = pickled("f8", &[2, 2], &f8);
        for cut in 0..good.len() {
            assert!(parse_array(&good[..cut], "cut").is_err(), "a pickle cut at {cut} of {} was read", good.len());
        }
        let mut r = Rng::new(31);
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..1 + (r.uniform() * 4.0) as usize {
                let i = (r.uniform() * b.len() as f64) as usize;
                b[i] = (r.uniform() * 256.0) as u8;
            }
            b.truncate((r.uniform() * b.len() as f64) as usize + 1);
            let _ = parse_array(&b, "fuzz");
        }
        for _ in 0..2_000 {
            let b: Vec<u8> = (0..(r.uniform() * 64.0) as usize).map(|_| (r.uniform() * 256.0) as u8).collect();
            let _ = parse_array(&b, "fuzz");
        }
    }
}
