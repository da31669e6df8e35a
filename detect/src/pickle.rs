//! NumPy arrays saved with Python's `pickle` (`pickle.dump(array, f)`, protocols 2 to 5), the
//! layout some labelled data sets ship in. Read without running anything: a pickle is a
//! program for a stack machine that may call any Python function, so this reads only the
//! opcodes such a file uses and accepts only the calls NumPy writes for one array
//! (`numpy.core.multiarray._reconstruct` with its state, or `numpy.core.numeric._frombuffer`
//! at protocol 5; `numpy.dtype`; `_codecs.encode` for the bytes at protocol 2). A fault in
//! the opcodes is an error naming its byte offset; an array that is not one this reads is an
//! error naming what it holds. Values are shared, never copied, so a file of N bytes and at
//! most [`MAX_OPS`] opcodes holds O(N + [`MAX_OPS`]) memory whatever its memo does.

use std::rc::Rc;

use crate::eval::EvalError;

/// A value on the pickle machine's stack, as far as an array needs; cheap to clone.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value]>),
    /// `module.name`.
    Global(Rc<str>),
    /// A call: the callable's name, its arguments and the state `BUILD` set on it.
    Object {
        class: Rc<str>,
        args: Rc<[Value]>,
        state: Option<Rc<Value>>,
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

/// The calls a NumPy array's pickle makes, and nothing else is called.
const CALLS: [&str; 6] = [
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "numpy.dtype",
    "_codecs.encode",
];

/// Reads one pickled NumPy array of `f8`, `f4`, `i8`, `i4`, `u1` or `b1` elements
/// (little-endian), one or two dimensions, C order; `origin` names the file in errors.
pub fn parse_array(bytes: &[u8], origin: &str) -> Result<Array, EvalError> {
    let value = run(bytes).map_err(|(at, message)| EvalError { at: format!("{origin}: byte {at}"), message })?;
    let err = |message: String| EvalError { at: origin.to_owned(), message };
    let Value::Object { class, args, state } = value else {
        return Err(err("the pickle does not hold a NumPy array".into()));
    };
    // Protocols 2 to 4: _reconstruct(ndarray, (0,), b'b') and the state
    // (version, shape, dtype, fortran order, data); protocol 5: _frombuffer(data, dtype,
    // shape, order).
    let (shape, dtype, fortran, data) = if class.ends_with("multiarray._reconstruct") {
        let Some(Value::Tuple(state)) = state.as_deref() else {
            return Err(err("the array has no (version, shape, dtype, fortran order, data) state".into()));
        };
        let [Value::Int(_), Value::Tuple(shape), dtype, Value::Bool(fortran), Value::Bytes(data)] = &state[..] else {
            return Err(err("the array's state is not (version, shape, dtype, fortran order, data)".into()));
        };
        (shape.clone(), dtype.clone(), *fortran, data.clone())
    } else if class.ends_with("numeric._frombuffer") {
        let [Value::Bytes(data), dtype, Value::Tuple(shape), Value::Str(order)] = &args[..] else {
            return Err(err("the array's arguments are not (data, dtype, shape, order)".into()));
        };
        (shape.clone(), dtype.clone(), &**order == "F", data.clone())
    } else {
        return Err(err(format!("the pickle holds a {class}, not a NumPy array")));
    };
    if fortran {
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
    let kind = match (&*class, args.first()) {
        ("numpy.dtype", Some(Value::Str(k))) => k.clone(),
        _ => return Err(err("the array's element type is not a numpy.dtype".into())),
    };
    let order = match state.as_deref() {
        Some(Value::Tuple(s)) => match s.get(1) {
            Some(Value::Str(o)) => o.clone(),
            _ => "|".into(),
        },
        _ => "|".into(),
    };
    let (size, read): (usize, fn(&[u8]) -> f64) = match (&*kind, &*order) {
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
        let m = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or((at, "no mark on the stack".to_owned()))?;
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
                stack.push(Value::Global(format!("{module}.{name}").into()));
            }
            0x93 => {
                let name = pop(&mut stack, op_at)?;
                let module = pop(&mut stack, op_at)?;
                let (Value::Str(m), Value::Str(n)) = (module, name) else {
                    return Err((op_at, "a global named by something other than text".into()));
                };
                stack.push(Value::Global(format!("{m}.{n}").into()));
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
                stack.push(Value::Str(s.into()));
            }
            // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8 (protocol 5's in-band buffer).
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => le(take(&mut at, 4)?),
                    b'C' => le(take(&mut at, 1)?),
                    _ => le(take(&mut at, 8)?),
                };
                let data = take(&mut at, usize::try_from(n).unwrap_or(usize::MAX))?;
                stack.push(Value::Bytes(data.into()));
            }
            b'(' => stack.push(Value::Mark),
            b')' => stack.push(Value::Tuple(Rc::from([]))),
            b't' => {
                let items = to_mark(&mut stack, op_at)?;
                stack.push(Value::Tuple(items.into()));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n || stack[stack.len() - n..].iter().any(|v| matches!(v, Value::Mark)) {
                    return Err((op_at, format!("a tuple of {n} without {n} values")));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items.into()));
            }
            b'R' => {
                let args = pop(&mut stack, op_at)?;
                let callable = pop(&mut stack, op_at)?;
                let (Value::Global(class), Value::Tuple(args)) = (callable, args) else {
                    return Err((op_at, "a call of something other than a named global".into()));
                };
                if !CALLS.contains(&&*class) {
                    return Err((op_at, format!("a call of {class}, which an array's pickle does not make")));
                }
                if &*class == "_codecs.encode" {
                    // Protocol 2's bytes: a text of code points under 256, as Latin-1.
                    let [Value::Str(text), Value::Str(codec)] = &args[..] else {
                        return Err((op_at, "_codecs.encode without (text, codec)".into()));
                    };
                    if &**codec != "latin1" && &**codec != "latin-1" {
                        return Err((op_at, format!("_codecs.encode to {codec}, not latin1")));
                    }
                    let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    let bytes = bytes.ok_or((op_at, "latin1 text with a code point past 255".to_owned()))?;
                    stack.push(Value::Bytes(bytes.into()));
                } else {
                    stack.push(Value::Object { class, args, state: None });
                }
            }
            b'b' => {
                let new = pop(&mut stack, op_at)?;
                match stack.last_mut() {
                    Some(Value::Object { state, .. }) => *state = Some(Rc::new(new)),
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

    /// Protocol 5's form: `_frombuffer(bytearray, dtype, shape, order)`, names by
    /// STACK_GLOBAL, a frame, memoized with MEMOIZE.
    fn pickled5(kind: &str, shape: &[u8], data: &[u8]) -> Vec<u8> {
        let text = |b: &mut Vec<u8>, t: &str| {
            b.push(0x8c);
            b.push(u8::try_from(t.len()).unwrap());
            b.extend(t.as_bytes());
            b.push(0x94);
        };
        let mut b = b"\x80\x05\x95\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        text(&mut b, "numpy._core.numeric");
        text(&mut b, "_frombuffer");
        b.extend(b"\x93\x94(\x96");
        b.extend(u64::try_from(data.len()).unwrap().to_le_bytes());
        b.extend(data);
        b.push(0x94);
        text(&mut b, "numpy");
        text(&mut b, "dtype");
        b.extend(b"\x93\x94");
        text(&mut b, kind);
        b.extend(b"\x89\x88\x87\x94R\x94(K\x03");
        text(&mut b, "<");
        b.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b");
        for d in shape {
            b.extend([b'K', *d]);
        }
        b.push(if shape.len() == 1 { 0x85 } else { 0x86 });
        b.push(0x94);
        text(&mut b, "C");
        b.extend(b"t\x94R\x94.");
        b
    }

    #[test]
    fn protocol_five_and_protocol_two_forms_read_too() {
        let f8: Vec<u8> = [1.0_f64, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_array(&pickled5("f8", &[2, 2], &f8), "p5.pkl").unwrap();
        assert_eq!((a.shape, a.values), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        // Protocol 2 under Python 3: the bytes are _codecs.encode('...', 'latin1').
        let mut p2 = pickled("u1", &[3], &[]);
        let at = p2.windows(6).position(|w| w == b"\x89B\x00\x00\x00\x00").unwrap() + 1;
        let codecs = b"c_codecs\nencode\nX\x04\x00\x00\x00\x00\xc3\xbf\x07X\x06\x00\x00\x00latin1\x86R";
        p2.splice(at..at + 5, codecs.iter().copied());
        let a = parse_array(&p2, "p2.pkl").unwrap();
        assert_eq!((a.shape, a.values), (vec![3], vec![0.0, 255.0, 7.0]));
    }

    #[test]
    fn a_memo_that_doubles_a_value_costs_nothing() {
        // Fetch entry i twice, pair the copies, store as i + 1: 2^40 leaves if copied.
        let mut b = b"\x80\x03K\x01q\x00".to_vec();
        for i in 0..40_u8 {
            b.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        b.push(b'.');
        // A reader that copied would run out of memory here.
        let e = parse_array(&b, "x.pkl").unwrap_err().to_string();
        assert_eq!(e, "x.pkl: the pickle does not hold a NumPy array");
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
