//! Checks on a model file before anything is written or loaded.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Refuse a path that is not a readable GGUF file (version 2 or 3), with one clear sentence.
pub fn check_model_file(path: &Path) -> Result<u64> {
    let metadata = std::fs::metadata(path).map_err(|e| {
        Error::Usage(format!(
            "model file {} cannot be read ({e}); check the --model path (run `make model` to fetch the default)",
            path.display()
        ))
    })?;
    if !metadata.is_file() {
        return Err(Error::Usage(format!(
            "--model {} is not a file; pass a .gguf file",
            path.display()
        )));
    }
    let mut header = [0u8; 8];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map(|_| ());
    if read.is_err() || &header[..4] != b"GGUF" {
        return Err(Error::Usage(format!(
            "--model {} is not a GGUF file (no GGUF magic); convert it with llama.cpp's convert_hf_to_gguf.py or download a .gguf",
            path.display()
        )));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=3).contains(&version) {
        return Err(Error::Usage(format!(
            "--model {} is GGUF version {version}; this llama.cpp reads versions 2 and 3",
            path.display()
        )));
    }
    Ok(metadata.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_gguf_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = check_model_file(&dir.path().join("none.gguf")).unwrap_err();
        assert!(missing.to_string().contains("cannot be read"), "{missing}");
        let text = dir.path().join("text.gguf");
        std::fs::write(&text, b"hello world, not a model").unwrap();
        assert!(check_model_file(&text)
            .unwrap_err()
            .to_string()
            .contains("not a GGUF"));
        let future = dir.path().join("v9.gguf");
        std::fs::write(&future, b"GGUF\x09\x00\x00\x00rest").unwrap();
        assert!(check_model_file(&future)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        let good = dir.path().join("v3.gguf");
        std::fs::write(&good, b"GGUF\x03\x00\x00\x00rest").unwrap();
        assert_eq!(check_model_file(&good).unwrap(), 12);
        assert!(check_model_file(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a file"));
    }
}
