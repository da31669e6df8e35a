//! Writes the CRD YAML of the contract.
//!
//! `crdgen [DIR…]` writes `agentrollouts.vigil.dev.yaml`, `alertpolicies.vigil.dev.yaml` and
//! `agentstatuses.vigil.dev.yaml` into each DIR (default `crds/`), atomically: each file is
//! written beside its target and renamed over it, so a reader never sees half a file.
//! `crdgen --check [DIR…]` writes nothing and exits 1 when a file differs.
//! `--reference FILE` writes (or checks) the CRD reference in Markdown there too.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut check = false;
    let mut dirs = Vec::new();
    let mut reference: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--reference" => {
                reference = Some(PathBuf::from(args.next().context("--reference needs a FILE")?));
            }
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [--reference FILE] [DIR...]   (default DIR: crds)");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown option {s:?}; see crdgen --help"),
            s => dirs.push(PathBuf::from(s)),
        }
    }
    if dirs.is_empty() {
        dirs.push(PathBuf::from("crds"));
    }
    let mut stale = Vec::new();
    for dir in &dirs {
        for (file, text) in vigil_crds::render_all().context("rendering the CRDs")? {
            let path = dir.join(file);
            if check {
                let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
                if on_disk != text {
                    stale.push(path);
                }
            } else {
                write_atomically(&path, &text)?;
                println!("wrote {}", path.display());
            }
        }
    }
    if let Some(path) = &reference {
        let text = vigil_crds::reference::markdown();
        if check {
            if std::fs::read_to_string(path).unwrap_or_default() != text {
                stale.push(path.clone());
            }
        } else {
            write_atomically(path, &text)?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        for p in &stale {
            eprintln!("stale: {} (run `make generate`)", p.display());
        }
        std::process::exit(1);
    }
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("target has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
