//! A small GGUF metadata reader: header, key/value pairs of every value type (arrays included)
//! and tensor infos, with each tensor's byte size from its ggml type. The weights themselves are
//! never read, so a multi-GB model is inspected in milliseconds and a file whose tensor data is
//! missing (truncated, or written header-only on purpose) is still described.
//!
//! Every read is bounded by the file length: a malformed file yields a typed error naming the
//! file, never a panic or a huge allocation.

use crate::error::Result;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Arrays longer than this are summarised (length, text bytes) rather than kept element by element.
const KEEP_ARRAY_ELEMENTS: u64 = 4096;
/// Longest single string accepted (a chat template is a few KB; a token a few bytes).
const MAX_STRING: u64 = 64 << 20;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;
/// Nesting depth of arrays of arrays accepted.
const MAX_DEPTH: u32 = 3;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// `string` (lossy UTF-8)
    String(String),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
    /// `array`
    Array(Array),
}

/// An array value. Long arrays (the tokenizer's) keep only their length and text size.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// GGUF value type code of the elements.
    pub element_type: u32,
    /// Number of elements.
    pub len: u64,
    /// Total bytes of string elements (0 for numeric arrays).
    pub text_bytes: u64,
    /// The elements, when `len` is at most 4096; empty otherwise.
    pub values: Vec<Value>,
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            Value::Bool(v) => Some(v.into()),
            _ => None,
        }
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor as the header declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml dimensions, `ne[0]` first (the row length).
    pub dims: Vec<u64>,
    /// ggml type code.
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data (from the type's block size and bytes per block).
    pub bytes: u64,
}

impl TensorInfo {
    /// Elements in the tensor.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The transformer block this tensor belongs to (`blk.N.` prefix), if any.
    pub fn layer(&self) -> Option<u32> {
        let rest = self.name.strip_prefix("blk.")?;
        rest.split('.').next()?.parse().ok()
    }

    /// ggml type name (`Q4_K`, `F16`, ...).
    pub fn type_name(&self) -> &'static str {
        ggml_type(self.ggml_type).map_or("?", |t| t.name)
    }
}

/// Block layout of a ggml type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    /// Name as ggml prints it.
    pub name: &'static str,
    /// Elements per block.
    pub block: u64,
    /// Bytes per block.
    pub bytes: u64,
}

/// ggml's type table (ggml.h / ggml.c `type_traits`, the llama.cpp snapshot this crate links).
pub fn ggml_type(code: u32) -> Option<GgmlType> {
    let (name, block, bytes) = match code {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 40),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        40 => ("NVFP4", 64, 36),
        41 => ("Q1_0", 128, 18),
        42 => ("Q2_0", 64, 18),
        _ => return None,
    };
    Some(GgmlType { name, block, bytes })
}

/// `general.file_type` (llama_ftype) as the quantization name llama.cpp prints.
pub fn file_type_name(code: u64) -> Option<&'static str> {
    Some(match code {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// A parsed GGUF header.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// The file.
    pub path: PathBuf,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section (`general.alignment`, default 32).
    pub alignment: u64,
    /// Offset of the data section from the start of the file.
    pub data_offset: u64,
    /// Length of the file on disk.
    pub file_bytes: u64,
}

impl Gguf {
    /// Read the header of `path`. Errors are [`Error::Usage`] naming the file.
    pub fn open(path: &Path) -> Result<Gguf> {
        let fail = |reason: String| {
            crate::error::usage(format!(
                "--model {}: not a readable GGUF file: {reason}",
                path.display()
            ))
        };
        let file = File::open(path).map_err(|e| fail(format!("cannot open it ({e})")))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| fail(format!("cannot stat it ({e})")))?
            .len();
        let mut reader = Reader {
            inner: BufReader::with_capacity(1 << 16, file),
            position: 0,
            len: file_bytes,
        };
        Gguf::parse(&mut reader, path, file_bytes).map_err(fail)
    }

    // Linear: one read per header field, in file order; splitting would scatter the file format.
    fn parse(r: &mut Reader, path: &Path, file_bytes: u64) -> std::result::Result<Gguf, String> {
        let magic = r.bytes(4)?;
        if magic != b"GGUF" {
            return Err("no GGUF magic at the start".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!(
                "GGUF version {version}; this llama.cpp reads versions 2 and 3"
            ));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        // Each key/value takes at least 12 bytes and each tensor info at least 24.
        if kv_count.saturating_mul(12) > r.remaining() {
            return Err(format!(
                "header claims {kv_count} metadata entries, more than the file holds"
            ));
        }
        if tensor_count.saturating_mul(24) > r.remaining() {
            return Err(format!(
                "header claims {tensor_count} tensors, more than the file holds"
            ));
        }
        let mut metadata = Vec::with_capacity(kv_count as usize);
        for index in 0..kv_count {
            let key = r
                .string()
                .map_err(|e| format!("metadata entry {index}: {e}"))?;
            let kind = r.u32()?;
            let value = r
                .value(kind, 0)
                .map_err(|e| format!("metadata `{key}`: {e}"))?;
            metadata.push((key, value));
        }
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(32);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(format!(
                "general.alignment {alignment} is not a power of two"
            ));
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for index in 0..tensor_count {
            let name = r.string().map_err(|e| format!("tensor {index}: {e}"))?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!("tensor `{name}` has {n_dims} dimensions"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let type_code = r.u32()?;
            let offset = r.u64()?;
            let layout = ggml_type(type_code)
                .ok_or_else(|| format!("tensor `{name}` has unknown ggml type {type_code}"))?;
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| format!("tensor `{name}` dimensions overflow"))?;
            if dims[0] % layout.block != 0 {
                return Err(format!(
                    "tensor `{name}` row of {} elements is not a multiple of the {} block of {}",
                    dims[0], layout.name, layout.block
                ));
            }
            let bytes = (elements / layout.block)
                .checked_mul(layout.bytes)
                .ok_or_else(|| format!("tensor `{name}` size overflows"))?;
            if offset % alignment != 0 {
                return Err(format!(
                    "tensor `{name}` offset {offset} is not aligned to {alignment}"
                ));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type: type_code,
                offset,
                bytes,
            });
        }
        let data_offset = r.position.div_ceil(alignment) * alignment;
        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file_bytes,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// `{architecture}.{suffix}`, e.g. `arch_key("block_count")`.
    pub fn arch_value(&self, suffix: &str) -> Option<&Value> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    /// An unsigned `{architecture}.{suffix}` value; for a per-layer array, its largest element.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        match self.arch_value(suffix)? {
            Value::Array(a) => a.values.iter().filter_map(Value::as_u64).max(),
            v => v.as_u64(),
        }
    }

    /// Bytes of tensor data the header declares: from the data section start to the end of the
    /// last tensor. A complete file is at least this long.
    pub fn declared_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.offset.saturating_add(t.bytes))
            .max()
            .unwrap_or(0)
            .saturating_add(self.data_offset)
    }

    /// Whether the file is shorter than its header declares (tensor data missing).
    pub fn is_truncated(&self) -> bool {
        self.file_bytes < self.declared_bytes()
    }

    /// Tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

struct Reader {
    inner: BufReader<File>,
    position: u64,
    len: u64,
}

impl Reader {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.position)
    }

    fn bytes(&mut self, n: u64) -> std::result::Result<Vec<u8>, String> {
        if n > self.remaining() {
            return Err(format!(
                "the file ends at byte {} but {n} more bytes are needed at byte {}",
                self.len, self.position
            ));
        }
        let mut buffer = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buffer)
            .map_err(|e| format!("read failed at byte {}: {e}", self.position))?;
        self.position += n;
        Ok(buffer)
    }

    fn skip(&mut self, n: u64) -> std::result::Result<(), String> {
        if n > self.remaining() {
            return Err(format!(
                "the file ends at byte {} but {n} more bytes are needed at byte {}",
                self.len, self.position
            ));
        }
        let offset = i64::try_from(n).map_err(|_| "skip too large".to_string())?;
        self.inner
            .seek_relative(offset)
            .map_err(|e| format!("seek failed at byte {}: {e}", self.position))?;
        self.position += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let bytes = self.bytes(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string_len(&mut self) -> std::result::Result<u64, String> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(format!("a string of {len} bytes is implausibly long"));
        }
        if len > self.remaining() {
            return Err(format!(
                "a string of {len} bytes runs past the end of the file (byte {})",
                self.len
            ));
        }
        Ok(len)
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let len = self.string_len()?;
        Ok(String::from_utf8_lossy(&self.bytes(len)?).into_owned())
    }

    fn value(&mut self, kind: u32, depth: u32) -> std::result::Result<Value, String> {
        Ok(match kind {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array()?)),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err("arrays nested too deeply".into());
                }
                let element_type = self.u32()?;
                let len = self.u64()?;
                let min_size = match element_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(format!("unknown array element type {other}")),
                };
                if len.saturating_mul(min_size) > self.remaining() {
                    return Err(format!(
                        "an array of {len} elements runs past the end of the file"
                    ));
                }
                let keep = len <= KEEP_ARRAY_ELEMENTS;
                let mut values = Vec::with_capacity(if keep { len as usize } else { 0 });
                let mut text_bytes = 0u64;
                for _ in 0..len {
                    if element_type == 8 && !keep {
                        let n = self.string_len()?;
                        self.skip(n)?;
                        text_bytes += n;
                        continue;
                    }
                    if !keep && element_type != 9 {
                        self.skip(min_size)?;
                        continue;
                    }
                    let value = self.value(element_type, depth + 1)?;
                    if let Value::String(s) = &value {
                        text_bytes += s.len() as u64;
                    }
                    if keep {
                        values.push(value);
                    }
                }
                Value::Array(Array {
                    element_type,
                    len,
                    text_bytes,
                    values,
                })
            }
            other => return Err(format!("unknown value type {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal GGUF writer for the tests.
    struct Writer(Vec<u8>);

    impl Writer {
        fn new(version: u32, tensors: u64, kvs: u64) -> Writer {
            let mut w = Writer(b"GGUF".to_vec());
            w.0.extend(version.to_le_bytes());
            w.0.extend(tensors.to_le_bytes());
            w.0.extend(kvs.to_le_bytes());
            w
        }
        fn string(&mut self, s: &str) {
            self.0.extend((s.len() as u64).to_le_bytes());
            self.0.extend(s.as_bytes());
        }
        fn kv_u32(&mut self, key: &str, v: u32) {
            self.string(key);
            self.0.extend(4u32.to_le_bytes());
            self.0.extend(v.to_le_bytes());
        }
        fn kv_str(&mut self, key: &str, v: &str) {
            self.string(key);
            self.0.extend(8u32.to_le_bytes());
            self.string(v);
        }
        fn kv_str_array(&mut self, key: &str, items: &[&str]) {
            self.string(key);
            self.0.extend(9u32.to_le_bytes());
            self.0.extend(8u32.to_le_bytes());
            self.0.extend((items.len() as u64).to_le_bytes());
            for item in items {
                self.string(item);
            }
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) {
            self.string(name);
            self.0.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.0.extend(d.to_le_bytes());
            }
            self.0.extend(ty.to_le_bytes());
            self.0.extend(offset.to_le_bytes());
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reads_metadata_tensors_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(3, 2, 4);
        w.kv_str("general.architecture", "llama");
        w.kv_u32("llama.block_count", 1);
        w.kv_str_array("tokenizer.ggml.tokens", &["a", "bc", "def"]);
        w.kv_u32("general.file_type", 15);
        w.tensor("token_embd.weight", &[256, 3], 12, 0);
        w.tensor("blk.0.attn_q.weight", &[256, 256], 14, 448);
        let header = w.0.len() as u64;
        let data_offset = header.div_ceil(32) * 32;
        let mut bytes = w.0.clone();
        bytes.resize((data_offset + 448 + 256 * 210) as usize, 0);
        let path = write(dir.path(), "ok.gguf", &bytes);
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("block_count"), Some(1));
        assert_eq!(g.data_offset, data_offset);
        assert_eq!(g.tensors[0].bytes, 3 * 144);
        assert_eq!(g.tensors[1].bytes, 256 * 210);
        assert_eq!(g.tensors[1].layer(), Some(0));
        assert_eq!(g.tensors[1].type_name(), "Q6_K");
        assert_eq!(g.tensors[0].layer(), None);
        match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => {
                assert_eq!((a.len, a.text_bytes, a.values.len()), (3, 6, 3));
            }
            other => panic!("{other:?}"),
        }
        assert!(!g.is_truncated());
        assert_eq!(g.declared_bytes(), bytes.len() as u64);
        // The same header with the data cut off is read, and reported truncated.
        let cut = write(dir.path(), "cut.gguf", &bytes[..bytes.len() - 1000]);
        let g = Gguf::open(&cut).unwrap();
        assert!(g.is_truncated());
    }

    #[test]
    fn malformed_files_are_typed_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty.gguf", Vec::new(), "more bytes"),
            ("magic.gguf", b"GGML\x03\x00\x00\x00".to_vec(), "magic"),
            ("v1.gguf", b"GGUF\x01\x00\x00\x00".to_vec(), "version 1"),
        ];
        // Claims a billion metadata entries.
        let w = Writer::new(3, 0, 1_000_000_000);
        cases.push(("many.gguf", w.0, "more than the file holds"));
        // A string length far past the end.
        let mut w = Writer::new(3, 0, 1);
        w.0.extend((1u64 << 40).to_le_bytes());
        w.0.extend([0u8; 64]);
        cases.push(("string.gguf", w.0, "implausibly long"));
        // An array whose length runs past the end.
        let mut w = Writer::new(3, 0, 1);
        w.string("k");
        w.0.extend(9u32.to_le_bytes());
        w.0.extend(4u32.to_le_bytes());
        w.0.extend(u64::MAX.to_le_bytes());
        w.0.extend([0u8; 64]);
        cases.push(("array.gguf", w.0, "past the end"));
        // An unknown value type.
        let mut w = Writer::new(3, 0, 1);
        w.string("k");
        w.0.extend(77u32.to_le_bytes());
        w.0.extend([0u8; 64]);
        cases.push(("type.gguf", w.0, "unknown value type 77"));
        // A tensor of an unknown ggml type, and one with too many dimensions.
        let mut w = Writer::new(3, 1, 0);
        w.tensor("t", &[32], 99, 0);
        cases.push(("ggml.gguf", w.0, "unknown ggml type 99"));
        let mut w = Writer::new(3, 1, 0);
        w.tensor("t", &[1, 1, 1, 1, 1], 0, 0);
        cases.push(("dims.gguf", w.0, "5 dimensions"));
        let mut w = Writer::new(3, 1, 0);
        w.tensor("t", &[u64::MAX, 4], 0, 0);
        cases.push(("overflow.gguf", w.0, "overflow"));
        let mut w = Writer::new(3, 1, 0);
        w.tensor("t", &[100], 12, 0);
        cases.push(("block.gguf", w.0, "not a multiple"));
        for (name, bytes, expected) in cases {
            let path = write(dir.path(), name, &bytes);
            let error = Gguf::open(&path).unwrap_err();
            let text = error.to_string();
            assert!(
                matches!(error.downcast_ref(), Some(crate::error::Error::Usage(_))),
                "{name}: {text}"
            );
            assert!(text.contains(name), "{name}: {text}");
            assert!(text.contains(expected), "{name}: {text}");
        }
        let missing = Gguf::open(&dir.path().join("none.gguf")).unwrap_err();
        assert!(missing.to_string().contains("cannot open"), "{missing}");
    }

    #[test]
    fn every_prefix_of_a_valid_header_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(3, 1, 2);
        w.kv_str("general.architecture", "llama");
        w.kv_str_array("tokenizer.ggml.tokens", &["a", "b"]);
        w.tensor("blk.0.ffn_up.weight", &[32, 2], 8, 0);
        for cut in 0..w.0.len() {
            let path = write(dir.path(), "prefix.gguf", &w.0[..cut]);
            assert!(Gguf::open(&path).is_err(), "prefix of {cut} bytes accepted");
        }
    }
}
