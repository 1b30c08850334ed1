//! Brotli and gzip copies of the console's static files.
//!
//! leptos_axum's file handler sends `bindery.<hash>.wasm.br` (or `.gz`)
//! with `Content-Encoding` to a browser that accepts it, when the copy
//! exists beside the file. cargo-leptos 0.3 writes no such copies, so the
//! server makes them at start, in the background: each file of the site's
//! `pkg/` folder whose copy is missing or older than the file. Until a copy
//! is written the file is sent as it is; a site folder the server may not
//! write to is reported once in the log and served uncompressed.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file kinds worth compressing (the rest is already compressed or tiny).
const EXTENSIONS: &[&str] = &["wasm", "js", "css", "svg", "html"];

/// Files smaller than this are sent as they are.
const MIN_SIZE: u64 = 1024;

/// Files larger than this are left alone: a debug build's WASM (over 100 MB)
/// would cost minutes of brotli at every start of a test server.
const MAX_SIZE: u64 = 16 * 1024 * 1024;

/// Write missing or stale `.br` and `.gz` copies for every static file under
/// `site_root/pkg`. Returns how many copies were written.
pub fn precompress_site(site_root: &Path) -> std::io::Result<usize> {
    let mut written = 0;
    let dir = site_root.join("pkg");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
    for entry in entries {
        let path = entry?.path();
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else { continue };
        if !EXTENSIONS.contains(&ext) {
            continue;
        }
        let meta = std::fs::metadata(&path)?;
        if !meta.is_file() || meta.len() < MIN_SIZE || meta.len() > MAX_SIZE {
            continue;
        }
        let mut data: Option<Vec<u8>> = None;
        for (suffix, compress) in [("br", brotli_bytes as fn(&[u8]) -> std::io::Result<Vec<u8>>), ("gz", gzip_bytes)] {
            let copy = with_suffix(&path, suffix);
            if is_fresh(&copy, &meta) {
                continue;
            }
            let bytes = match &data {
                Some(d) => d,
                None => data.insert(std::fs::read(&path)?),
            };
            let packed = compress(bytes)?;
            // Write beside, then rename: a reader never sees half a file.
            let tmp = with_suffix(&path, &format!("{suffix}.tmp"));
            std::fs::write(&tmp, &packed)?;
            std::fs::rename(&tmp, &copy)?;
            written += 1;
        }
    }
    Ok(written)
}

/// [`precompress_site`] on the blocking pool, logging what it did.
pub fn spawn(site_root: String) {
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        match precompress_site(Path::new(&site_root)) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(copies = n, ms = started.elapsed().as_millis() as u64, "wrote compressed copies of the console's files")
            }
            Err(e) => tracing::warn!(
                site_root = %site_root,
                error = %e,
                "could not write compressed copies of the console's files: they are sent uncompressed (make the site folder writable, or ship the .br/.gz copies with it)"
            ),
        }
    });
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// A copy is fresh when it was written after the file last changed.
fn is_fresh(copy: &Path, original: &std::fs::Metadata) -> bool {
    match (std::fs::metadata(copy).and_then(|m| m.modified()), original.modified()) {
        (Ok(copy), Ok(orig)) => copy >= orig,
        _ => false,
    }
}

fn brotli_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 4);
    {
        // Quality 11 (the best), a 4 MiB window: written once per build.
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        w.write_all(data)?;
        w.flush()?;
    }
    Ok(out)
}

fn gzip_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut w = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), flate2::Compression::best());
    w.write_all(data)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_written_once_and_again_when_the_file_changes() {
        let site = tempfile::tempdir().unwrap();
        let pkg = site.path().join("pkg");
        std::fs::create_dir(&pkg).unwrap();
        let wasm = pkg.join("bindery.abc.wasm");
        let body: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        std::fs::write(&wasm, &body).unwrap();
        std::fs::write(pkg.join("tiny.js"), b"x").unwrap();
        std::fs::write(pkg.join("bindery.abc.d.ts"), vec![b'a'; 4096]).unwrap();

        assert_eq!(precompress_site(site.path()).unwrap(), 2, "a .br and a .gz of the WASM, nothing else");
        let br = std::fs::read(pkg.join("bindery.abc.wasm.br")).unwrap();
        let mut back = Vec::new();
        brotli_decompressor::BrotliDecompress(&mut br.as_slice(), &mut back).unwrap();
        assert_eq!(back, body, "the brotli copy decompresses to the file");
        assert!(br.len() < body.len() / 4, "compressed: {} of {}", br.len(), body.len());
        let gz = std::fs::read(pkg.join("bindery.abc.wasm.gz")).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut back).unwrap();
        assert_eq!(back, body, "the gzip copy decompresses to the file");
        assert!(!pkg.join("tiny.js.br").exists(), "tiny files are left alone");

        assert_eq!(precompress_site(site.path()).unwrap(), 0, "fresh copies are not written again");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&wasm, vec![b'z'; 5000]).unwrap();
        assert_eq!(precompress_site(site.path()).unwrap(), 2, "a changed file gets new copies");
    }
}
