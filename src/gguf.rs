//! A small GGUF metadata reader: header, key/value pairs of every value type (arrays included)
//! and tensor infos, with each tensor's byte size from its ggml type. The weights themselves are
//! never read, so a multi-GB model is inspected in milliseconds and a file whose tensor data is
//! missing (truncated, or written header-only on purpose) is still described.
//!
//! Every read is bounded by the file length: a malformed file yields a typed error naming the
//! file, never a panic or a huge allocation. Counts and lengths are checked against what the rest
//! of the file could hold (each metadata entry takes at least 13 bytes, each tensor info 32, each
//! array element its fixed size, each string its 8-byte length) before anything is reserved for
//! them, and nothing is reserved beyond a fixed cap either: the vectors grow with what is
//! actually read. Plausibility caps (65536 entries, 262144 tensors, 2^24 elements in an array
//! walked element by element, 256 MiB of kept metadata) bound memory and time even for a huge
//! sparse file whose zeros parse as entries. The
//! header is read through a 64 KiB buffer; a long array of fixed-size elements is skipped in one
//! seek, a long string array string by string through the buffer.

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
/// Most metadata entries accepted (real models have a few dozen).
const MAX_METADATA: u64 = 1 << 16;
/// Most tensors accepted (real models have at most a few thousand).
const MAX_TENSORS: u64 = 1 << 18;
/// Longest tensor name: llama.cpp refuses names of `GGML_MAX_NAME` (64) bytes or more.
const MAX_TENSOR_NAME: u64 = 63;
/// Most elements of a string array or an array of arrays, which are walked element by element
/// (the largest tokenizers have a few hundred thousand tokens and merges).
const MAX_WALKED_ARRAY: u64 = 1 << 24;
/// Memory the kept metadata (keys, strings, kept array elements) may take.
const MAX_METADATA_MEMORY: u64 = 256 << 20;
/// Entries reserved up front at most; the vectors grow with what is actually read.
const PREALLOCATE: u64 = 1024;
/// Fewest bytes one metadata entry takes: key length (8), value type (4), a one-byte value.
const MIN_METADATA_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes one tensor info takes: name length (8), dimension count (4), one dimension (8),
/// ggml type (4), offset (8).
const MIN_TENSOR_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

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
        self.dims.iter().fold(1, |acc, &d| acc.saturating_mul(d))
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
    ///
    /// [`Error::Usage`]: crate::error::Error::Usage
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
            memory_left: MAX_METADATA_MEMORY,
        };
        Gguf::parse(&mut reader, path, file_bytes).map_err(fail)
    }

    // Linear: one read per header field, in file order; splitting would scatter the file format.
    fn parse(r: &mut Reader, path: &Path, file_bytes: u64) -> std::result::Result<Gguf, String> {
        let magic = r.array::<4>()?;
        if &magic != b"GGUF" {
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
        // Every entry takes a minimum number of bytes: a count the rest of the file cannot hold
        // is refused before anything is reserved for it.
        let kv_bytes = kv_count.checked_mul(MIN_METADATA_BYTES);
        if kv_bytes.is_none_or(|b| b > r.remaining()) {
            return Err(format!(
                "header claims {kv_count} metadata entries, more than the file holds"
            ));
        }
        let tensor_bytes = tensor_count.checked_mul(MIN_TENSOR_BYTES);
        if tensor_bytes.is_none_or(|b| b > r.remaining()) {
            return Err(format!(
                "header claims {tensor_count} tensors, more than the file holds"
            ));
        }
        if kv_bytes
            .zip(tensor_bytes)
            .and_then(|(k, t)| k.checked_add(t))
            .is_none_or(|b| b > r.remaining())
        {
            return Err(format!(
                "header claims {kv_count} metadata entries and {tensor_count} tensors, more than the file holds"
            ));
        }
        if kv_count > MAX_METADATA {
            return Err(format!(
                "header claims {kv_count} metadata entries; no model has more than {MAX_METADATA}"
            ));
        }
        if tensor_count > MAX_TENSORS {
            return Err(format!(
                "header claims {tensor_count} tensors; no model has more than {MAX_TENSORS}"
            ));
        }
        let mut metadata = Vec::with_capacity(kv_count.min(PREALLOCATE) as usize);
        for index in 0..kv_count {
            r.charge(std::mem::size_of::<(String, Value)>() as u64)?;
            let key = r
                .string()
                .map_err(|e| format!("metadata entry {index}: {e}"))?;
            let kind = r.u32()?;
            let value = r
                .value(kind, 0)
                .map_err(|e| format!("metadata `{}`: {e}", shown(&key)))?;
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
        let mut tensors = Vec::with_capacity(tensor_count.min(PREALLOCATE) as usize);
        for index in 0..tensor_count {
            let name_len = r.string_len().map_err(|e| format!("tensor {index}: {e}"))?;
            if name_len > MAX_TENSOR_NAME {
                return Err(format!(
                    "tensor {index} has a name of {name_len} bytes; llama.cpp allows {MAX_TENSOR_NAME}"
                ));
            }
            let name = r.text(name_len)?;
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
            if offset.checked_add(bytes).is_none() {
                return Err(format!(
                    "tensor `{name}` at offset {offset} with {bytes} bytes ends past 2^64"
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
        let data_offset = r
            .position
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| format!("general.alignment {alignment} puts the data past 2^64"))?;
        // Each tensor's end was checked above; the data section's start is added once here, so
        // `declared_bytes` is exact (never saturated).
        let data_end = tensors
            .iter()
            .map(|t| t.offset + t.bytes)
            .max()
            .unwrap_or(0);
        if data_offset.checked_add(data_end).is_none() {
            return Err(format!(
                "its tensor data would end {data_end} bytes after byte {data_offset}, past 2^64"
            ));
        }
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

/// A key as error messages show it: at most 80 characters (a hostile key can be 64 MiB).
fn shown(key: &str) -> std::borrow::Cow<'_, str> {
    match key.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &key[..end]).into(),
        None => key.into(),
    }
}

/// Reads the header through a buffer, with every length checked against the bytes left in the
/// file and the memory the kept metadata may still take.
struct Reader {
    inner: BufReader<File>,
    position: u64,
    len: u64,
    /// Bytes of memory the kept metadata may still take ([`MAX_METADATA_MEMORY`] in all).
    memory_left: u64,
}

/// Bytes one element of a fixed-size GGUF value type takes, or `None` for strings and arrays
/// (whose size is in the file).
fn fixed_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

impl Reader {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.position)
    }

    fn need(&self, n: u64) -> std::result::Result<(), String> {
        if n > self.remaining() {
            return Err(format!(
                "the file ends at byte {} but {n} more bytes are needed at byte {}",
                self.len, self.position
            ));
        }
        Ok(())
    }

    /// Account for `bytes` of memory the parsed header keeps.
    fn charge(&mut self, bytes: u64) -> std::result::Result<(), String> {
        self.memory_left = self.memory_left.checked_sub(bytes).ok_or_else(|| {
            format!(
                "its metadata would take more than {} MiB of memory; no model header is that large",
                MAX_METADATA_MEMORY >> 20
            )
        })?;
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> std::result::Result<Vec<u8>, String> {
        self.need(n)?;
        let mut buffer = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buffer)
            .map_err(|e| format!("read failed at byte {}: {e}", self.position))?;
        self.position += n;
        Ok(buffer)
    }

    /// Move past `n` bytes: within the buffer when they are in it, else one seek.
    fn skip(&mut self, n: u64) -> std::result::Result<(), String> {
        self.need(n)?;
        let offset = i64::try_from(n).map_err(|_| format!("a skip of {n} bytes is too large"))?;
        self.inner
            .seek_relative(offset)
            .map_err(|e| format!("seek failed at byte {}: {e}", self.position))?;
        self.position += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        self.need(N as u64)?;
        let mut out = [0u8; N];
        self.inner
            .read_exact(&mut out)
            .map_err(|e| format!("read failed at byte {}: {e}", self.position))?;
        self.position += N as u64;
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

    /// `len` bytes of text, after [`Reader::string_len`] checked `len`. Bytes that are not
    /// UTF-8 read as `?`, so the text is exactly as long as its bytes (U+FFFD would take three).
    fn text(&mut self, len: u64) -> std::result::Result<String, String> {
        let bytes = self.bytes(len)?;
        Ok(String::from_utf8(bytes).unwrap_or_else(|e| {
            let bytes = e.into_bytes();
            let mut text = String::with_capacity(bytes.len());
            for chunk in bytes.utf8_chunks() {
                text.push_str(chunk.valid());
                text.extend(std::iter::repeat_n('?', chunk.invalid().len()));
            }
            text
        }))
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let len = self.string_len()?;
        self.charge(len)?;
        self.text(len)
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
            9 => Value::Array(self.array_value(depth)?),
            other => return Err(format!("unknown value type {other}")),
        })
    }

    /// The type and length of an array, with the length checked against the file: each element
    /// takes at least its fixed size, 8 bytes (a string's length) or 12 (an array's type and
    /// length).
    fn array_header(&mut self, depth: u32) -> std::result::Result<(u32, u64), String> {
        if depth >= MAX_DEPTH {
            return Err("arrays nested too deeply".into());
        }
        let element_type = self.u32()?;
        let len = self.u64()?;
        let min_size = match element_type {
            8 => 8,
            9 => 12,
            other => {
                fixed_size(other).ok_or_else(|| format!("unknown array element type {other}"))?
            }
        };
        if len
            .checked_mul(min_size)
            .is_none_or(|b| b > self.remaining())
        {
            return Err(format!(
                "an array of {len} elements runs past the end of the file"
            ));
        }
        if fixed_size(element_type).is_none() && len > MAX_WALKED_ARRAY {
            return Err(format!(
                "an array of {len} strings or arrays is implausibly long (at most {MAX_WALKED_ARRAY})"
            ));
        }
        Ok((element_type, len))
    }

    fn array_value(&mut self, depth: u32) -> std::result::Result<Array, String> {
        let (element_type, len) = self.array_header(depth)?;
        if len > KEEP_ARRAY_ELEMENTS {
            let text_bytes = self.skip_elements(element_type, len, depth)?;
            return Ok(Array {
                element_type,
                len,
                text_bytes,
                values: Vec::new(),
            });
        }
        self.charge(len * std::mem::size_of::<Value>() as u64)?;
        let mut values = Vec::with_capacity(len as usize);
        let mut text_bytes = 0u64;
        for _ in 0..len {
            let value = self.value(element_type, depth + 1)?;
            if let Value::String(s) = &value {
                text_bytes = text_bytes.saturating_add(s.len() as u64);
            }
            values.push(value);
        }
        Ok(Array {
            element_type,
            len,
            text_bytes,
            values,
        })
    }

    /// Move past `len` elements of an array that is only summarised; returns the bytes of its
    /// string elements. Fixed-size elements are skipped in one seek; strings and nested arrays
    /// one by one through the buffer.
    fn skip_elements(
        &mut self,
        element_type: u32,
        len: u64,
        depth: u32,
    ) -> std::result::Result<u64, String> {
        if let Some(size) = fixed_size(element_type) {
            // array_header checked that len × size fits in the file.
            self.skip(len * size)?;
            return Ok(0);
        }
        let mut text_bytes = 0u64;
        for _ in 0..len {
            if element_type == 8 {
                let n = self.string_len()?;
                self.skip(n)?;
                text_bytes = text_bytes.saturating_add(n);
            } else {
                let (inner_type, inner_len) = self.array_header(depth + 1)?;
                self.skip_elements(inner_type, inner_len, depth + 1)?;
            }
        }
        Ok(text_bytes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alloc_probe::{largest_allocation, property_config, PARSE_ALLOCATION_LIMIT};
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::{TestCaseError, TestRunner};

    /// A minimal GGUF writer for the tests. It notes where each count, length and type field
    /// is (offset, width), for the property tests to aim their mutations at.
    pub(crate) struct Writer(pub(crate) Vec<u8>, Vec<(usize, usize)>);

    impl Writer {
        pub(crate) fn new(version: u32, tensors: u64, kvs: u64) -> Writer {
            let mut w = Writer(b"GGUF".to_vec(), Vec::new());
            w.0.extend(version.to_le_bytes());
            w.field_u64(tensors);
            w.field_u64(kvs);
            w
        }
        pub(crate) fn field_u32(&mut self, v: u32) {
            self.1.push((self.0.len(), 4));
            self.0.extend(v.to_le_bytes());
        }
        pub(crate) fn field_u64(&mut self, v: u64) {
            self.1.push((self.0.len(), 8));
            self.0.extend(v.to_le_bytes());
        }
        pub(crate) fn string(&mut self, s: &str) {
            self.field_u64(s.len() as u64);
            self.0.extend(s.as_bytes());
        }
        pub(crate) fn kv_u32(&mut self, key: &str, v: u32) {
            self.string(key);
            self.field_u32(4);
            self.0.extend(v.to_le_bytes());
        }
        pub(crate) fn kv_u64(&mut self, key: &str, v: u64) {
            self.string(key);
            self.field_u32(10);
            self.0.extend(v.to_le_bytes());
        }
        pub(crate) fn kv_str(&mut self, key: &str, v: &str) {
            self.string(key);
            self.field_u32(8);
            self.string(v);
        }
        pub(crate) fn kv_str_array(&mut self, key: &str, items: &[&str]) {
            self.string(key);
            self.field_u32(9);
            self.field_u32(8);
            self.field_u64(items.len() as u64);
            for (index, item) in items.iter().enumerate() {
                // Only the first few elements' lengths are aimed at, not thousands of tokens.
                if index < 4 {
                    self.string(item);
                } else {
                    self.0.extend((item.len() as u64).to_le_bytes());
                    self.0.extend(item.as_bytes());
                }
            }
        }
        /// An array of `len` elements of the fixed-size type `ty` (`size` bytes each).
        pub(crate) fn kv_fixed_array(&mut self, key: &str, ty: u32, size: usize, len: u64) {
            self.string(key);
            self.field_u32(9);
            self.field_u32(ty);
            self.field_u64(len);
            self.0
                .extend((0..len as usize * size).map(|i| (i % 251) as u8));
        }
        /// An array of `outer` arrays of two u16 each.
        pub(crate) fn kv_nested_array(&mut self, key: &str, outer: u64) {
            self.string(key);
            self.field_u32(9);
            self.field_u32(9);
            self.field_u64(outer);
            for i in 0..outer {
                self.field_u32(2);
                self.field_u64(2);
                self.0.extend((i as u16).to_le_bytes());
                self.0.extend((i as u16 + 1).to_le_bytes());
            }
        }
        pub(crate) fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) {
            self.string(name);
            self.field_u32(dims.len() as u32);
            for d in dims {
                self.field_u64(*d);
            }
            self.field_u32(ty);
            self.field_u64(offset);
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

    /// A header at the start of a sparse file of `len` bytes (the rest reads as zeros).
    fn sparse(dir: &Path, name: &str, header: &[u8], len: u64) -> PathBuf {
        let path = write(dir, name, header);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        path
    }

    #[test]
    fn hostile_counts_in_a_huge_sparse_file_are_input_errors_without_reserving() {
        let dir = tempfile::tempdir().unwrap();
        let huge = 64u64 << 30;
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            // 2^31 tensors of at least 32 bytes each do not fit in 64 GiB.
            (
                "tensors.gguf",
                Writer::new(3, 1 << 31, 0).0,
                "more than the file holds",
            ),
            // 2^30 tensors would fit in the bytes, but no model has that many.
            (
                "many_tensors.gguf",
                Writer::new(3, 1 << 30, 0).0,
                "no model has more",
            ),
            (
                "many_keys.gguf",
                Writer::new(3, 0, 1 << 31).0,
                "no model has more",
            ),
            // Both counts together exceed the file though each alone fits.
            (
                "both.gguf",
                Writer::new(3, (huge / 32) / 2 + 1, (huge / 13) / 2 + 1).0,
                "metadata entries and",
            ),
        ];
        // A string array of 2^32 elements (their lengths fit in the file): each would be walked
        // one by one.
        let mut w = Writer::new(3, 0, 1);
        w.string("tokenizer.ggml.tokens");
        w.0.extend(9u32.to_le_bytes());
        w.0.extend(8u32.to_le_bytes());
        w.0.extend((1u64 << 32).to_le_bytes());
        cases.push(("strings.gguf", w.0, "implausibly long"));
        for (name, header, expected) in cases {
            let path = sparse(dir.path(), name, &header, huge);
            let (result, largest) = largest_allocation(|| Gguf::open(&path));
            let text = result.unwrap_err().to_string();
            assert!(
                text.contains(name) && text.contains(expected),
                "{name}: {text}"
            );
            assert!(
                largest < 1 << 20,
                "{name}: an allocation of {largest} bytes"
            );
        }
    }

    #[test]
    fn zeros_that_parse_as_entries_stop_at_the_caps() {
        // Zeros read as entries with an empty key and a u8 value: as many as the header claims,
        // up to the cap, and no more memory than the cap allows.
        let dir = tempfile::tempdir().unwrap();
        let header = Writer::new(3, 0, MAX_METADATA).0;
        let path = sparse(dir.path(), "zeros.gguf", &header, 64 << 30);
        let (g, largest) = largest_allocation(|| Gguf::open(&path).unwrap());
        assert_eq!(g.metadata.len() as u64, MAX_METADATA);
        assert!(largest <= 8 << 20, "an allocation of {largest} bytes");
        // A key as long as a string may be, then an unknown value type: the message shows the
        // key shortened.
        let mut w = Writer::new(3, 0, 1);
        w.0.extend(MAX_STRING.to_le_bytes());
        w.0.resize(w.0.len() + MAX_STRING as usize, b'k');
        w.0.extend(77u32.to_le_bytes());
        let path = write(dir.path(), "key.gguf", &w.0);
        let text = Gguf::open(&path).unwrap_err().to_string();
        assert!(
            text.contains("unknown value type 77") && text.len() < 400,
            "{text:.400}"
        );
    }

    #[test]
    fn a_long_fixed_size_array_is_skipped_in_one_seek() {
        // 64 GiB of u16 elements: element by element this would take minutes; one seek, no time.
        let dir = tempfile::tempdir().unwrap();
        let len = 32u64 << 30;
        let mut w = Writer::new(3, 0, 2);
        w.string("huge");
        w.0.extend(9u32.to_le_bytes());
        w.0.extend(2u32.to_le_bytes());
        w.0.extend(len.to_le_bytes());
        let header = w.0.len() as u64;
        let mut tail = Writer(Vec::new(), Vec::new());
        tail.kv_u32("after", 7);
        let path = sparse(dir.path(), "array.gguf", &w.0, header + 2 * len);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &tail.0))
            .unwrap();
        let started = std::time::Instant::now();
        let (g, largest) = largest_allocation(|| Gguf::open(&path).unwrap());
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        assert!(largest < 1 << 20, "an allocation of {largest} bytes");
        match g.get("huge") {
            Some(Value::Array(a)) => assert_eq!((a.len, a.values.len()), (len, 0)),
            other => panic!("{other:?}"),
        }
        assert_eq!(g.get("after"), Some(&Value::U32(7)));
    }

    #[test]
    fn summarised_arrays_are_skipped_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let tokens: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let mut w = Writer::new(3, 0, 5);
        w.kv_str_array("tokens", &tokens);
        w.kv_fixed_array("types", 5, 4, 5000);
        w.kv_nested_array("nested_long", 5000);
        w.kv_nested_array("nested_short", 3);
        w.kv_str("after", "ok");
        let path = write(dir.path(), "arrays.gguf", &w.0);
        let g = Gguf::open(&path).unwrap();
        let array = |key: &str| match g.get(key) {
            Some(Value::Array(a)) => a.clone(),
            other => panic!("{key}: {other:?}"),
        };
        let text: u64 = tokens.iter().map(|t| t.len() as u64).sum();
        let t = array("tokens");
        assert_eq!((t.len, t.text_bytes, t.values.len()), (5000, text, 0));
        let t = array("types");
        assert_eq!((t.element_type, t.len, t.values.len()), (5, 5000, 0));
        assert_eq!(array("nested_long").values.len(), 0);
        let short = array("nested_short");
        assert_eq!(
            short.values[2],
            Value::Array(Array {
                element_type: 2,
                len: 2,
                text_bytes: 0,
                values: vec![Value::U16(2), Value::U16(3)],
            })
        );
        assert_eq!(g.get("after").and_then(Value::as_str), Some("ok"));
        assert_eq!(g.data_offset, (w.0.len() as u64).div_ceil(32) * 32);
    }

    /// A valid header exercising every path of the reader: kept and summarised arrays of strings,
    /// fixed-size elements and arrays, tensors of several types.
    fn property_sample() -> Writer {
        let tokens: Vec<String> = (0..4100).map(|i| format!("tok{i}")).collect();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let mut w = Writer::new(3, 3, 11);
        w.kv_str("general.architecture", "llama");
        w.kv_u32("llama.block_count", 1);
        w.kv_u32("llama.embedding_length", 64);
        w.kv_u32("llama.attention.head_count", 4);
        w.kv_u32("llama.context_length", 256);
        w.kv_u32("general.alignment", 32);
        w.kv_str_array("tokenizer.ggml.tokens", &tokens);
        w.kv_fixed_array("tokenizer.ggml.token_type", 5, 4, 4100);
        w.kv_fixed_array("llama.attention.head_count_kv", 4, 4, 1);
        w.kv_nested_array("nested.short", 2);
        w.kv_nested_array("nested.long", 4100);
        w.tensor("token_embd.weight", &[64, 4100], 0, 0);
        w.tensor("blk.0.attn_q.weight", &[64, 64], 8, 1_049_600);
        w.tensor("output_norm.weight", &[64], 0, 1_054_080);
        w
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        /// Cut the file anywhere.
        Truncate(Index),
        /// Cut the file a few bytes after a count, length or type field.
        CutAtField(Index, usize),
        /// XOR one byte.
        Flip(Index, u8),
        /// Write a huge (or odd) number over a count, length or type field (one of the two header
        /// counts when the flag is set).
        Number(Index, bool, u64),
        /// Keep a prefix and append random bytes.
        Tail(Index, Vec<u8>),
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(u64::MAX),
            Just(1 << 63),
            Just(1 << 32),
            Just(1 << 31),
            Just(u64::from(u32::MAX)),
            Just(MAX_STRING),
            Just(MAX_STRING + 1),
            Just(KEEP_ARRAY_ELEMENTS),
            Just(KEEP_ARRAY_ELEMENTS + 1),
            Just(MAX_WALKED_ARRAY + 1),
            Just(MAX_METADATA),
            Just(MAX_TENSORS + 1),
            0u64..16,
            any::<u64>(),
        ]
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), 0usize..12).prop_map(|(i, k)| Mutation::CutAtField(i, k)),
            (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
            (any::<Index>(), any::<bool>(), number())
                .prop_map(|(i, header, v)| Mutation::Number(i, header, v)),
            (
                any::<Index>(),
                proptest::collection::vec(any::<u8>(), 0..256)
            )
                .prop_map(|(i, t)| Mutation::Tail(i, t)),
        ]
    }

    fn mutate(valid: &Writer, mutations: &[Mutation]) -> Vec<u8> {
        let mut bytes = valid.0.clone();
        let fields = &valid.1;
        for m in mutations {
            match m {
                Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
                Mutation::CutAtField(i, k) => {
                    let (at, _) = fields[i.index(fields.len())];
                    bytes.truncate((at + k).min(bytes.len()));
                }
                Mutation::Flip(i, mask) if !bytes.is_empty() => {
                    let at = i.index(bytes.len());
                    bytes[at] ^= mask;
                }
                Mutation::Flip(..) => {}
                Mutation::Number(i, header, v) => {
                    let (at, width) = fields[i.index(if *header { 2 } else { fields.len() })];
                    let le = v.to_le_bytes();
                    if at + width <= bytes.len() {
                        bytes[at..at + width].copy_from_slice(&le[..width]);
                    }
                }
                Mutation::Tail(i, tail) => {
                    bytes.truncate(i.index(bytes.len() + 1));
                    bytes.extend(tail);
                }
            }
        }
        bytes
    }

    /// Length of the sparse files the property tests extend some inputs to: counts and lengths
    /// up to billions are then plausible by the file's size, and only the reader's own caps
    /// keep it from trusting them.
    const SPARSE_LEN: u64 = 64 << 30;

    /// Parse `bytes` (followed by zeros up to 64 GiB when `sparse`) as a GGUF file and, when that
    /// succeeds, derive its shape and an estimate: no panic, no allocation above the limit, and
    /// every failure a usage error naming the file.
    fn check_parse(
        path: &Path,
        bytes: &[u8],
        sparse: bool,
    ) -> std::result::Result<(), TestCaseError> {
        // A fresh file each case: rewriting one in place makes ext4 flush it on close
        // (its replace-by-truncate heuristic), which turns thousands of cases into minutes.
        let _ = std::fs::remove_file(path);
        std::fs::write(path, bytes).unwrap();
        if sparse {
            File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(SPARSE_LEN))
                .unwrap();
        }
        let (outcome, largest) = largest_allocation(|| {
            let g = Gguf::open(path)?;
            let _ = (g.declared_bytes(), g.is_truncated(), g.architecture());
            for t in &g.tensors {
                let _ = (t.elements(), t.layer(), t.type_name());
            }
            let shape = crate::preflight::shape::ModelShape::from_gguf(&g)?;
            let plan = crate::preflight::estimate::Plan {
                ctx_per_seq: 4096,
                n_seq: 4,
                n_batch: 512,
                gpu_layers: 1,
                largest_batch: None,
                logits_rows: None,
                process_baseline: 0,
                gpu_backend: true,
                repack: Default::default(),
            };
            Ok::<_, anyhow::Error>(crate::preflight::estimate::estimate(&shape, &plan))
        });
        prop_assert!(
            largest <= PARSE_ALLOCATION_LIMIT,
            "an allocation of {largest} bytes"
        );
        if let Err(error) = outcome {
            let text = error.to_string();
            prop_assert!(
                matches!(error.downcast_ref(), Some(crate::error::Error::Usage(_))),
                "not a usage error: {text}"
            );
            prop_assert!(text.contains(&path.display().to_string()), "{text}");
        }
        Ok(())
    }

    #[test]
    fn property_gguf_reader_survives_mutations() {
        let valid = property_sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mutated.gguf");
        // The sample itself parses, so mutations start from a file that reaches every path.
        let g = Gguf::open(&{
            std::fs::write(&path, &valid.0).unwrap();
            path.clone()
        })
        .unwrap();
        assert_eq!((g.metadata.len(), g.tensors.len()), (11, 3));
        let mut runner = TestRunner::new(property_config(1000));
        runner
            .run(
                &(
                    proptest::collection::vec(mutation(), 1..5),
                    proptest::bool::weighted(0.25),
                ),
                |(mutations, sparse)| check_parse(&path, &mutate(&valid, &mutations), sparse),
            )
            .unwrap();
    }

    #[test]
    fn property_gguf_reader_survives_random_bytes_after_a_valid_prefix() {
        let valid = property_sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.gguf");
        let mut runner = TestRunner::new(property_config(1000));
        // Short prefixes (the header fields) are as likely as long ones.
        let prefix = prop_oneof![0usize..64, 0usize..1024, 0..valid.0.len() + 1];
        runner
            .run(
                &(
                    prefix,
                    proptest::collection::vec(any::<u8>(), 0..512),
                    proptest::bool::weighted(0.25),
                ),
                |(cut, tail, sparse)| {
                    let mut bytes = valid.0[..cut].to_vec();
                    bytes.extend(tail);
                    check_parse(&path, &bytes, sparse)
                },
            )
            .unwrap();
    }
}
