//! What the estimator needs to know about a model, read from its GGUF header alone.

use crate::error::{Error, Result};
use crate::gguf::{self, Gguf, Value};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Bytes of one tensor and where llama.cpp places it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorPlace {
    /// Tensor name.
    pub name: String,
    /// Bytes of data.
    pub bytes: u64,
    /// ggml type code.
    pub ggml_type: u32,
    /// Rows (`ne[1]`), which decide whether the CPU backend repacks it.
    pub rows: u64,
    /// Which llama.cpp layer it belongs to.
    pub layer: LayerRole,
}

/// llama.cpp's layer assignment (llama-model.cpp `load_tensors`): the input layer always stays on
/// the CPU; repeating layers and then the output layer are offloaded from the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayerRole {
    /// Token embeddings (and anything else outside a block and not the output).
    Input,
    /// Transformer block `N`.
    Block(u32),
    /// `output.weight` and `output_norm`.
    Output,
}

/// The shape of a model, from its GGUF metadata.
#[derive(Debug, Clone, Serialize)]
pub struct ModelShape {
    /// `general.name`, or the file stem.
    pub name: String,
    /// `general.architecture`.
    pub architecture: String,
    /// Quantization (`general.file_type`), e.g. `Q4_K_M`.
    pub quantization: String,
    /// Share of weight bytes per ggml type, largest first, e.g. `Q4_K 71%`.
    pub tensor_types: Vec<String>,
    /// Parameters (elements of all tensors).
    pub n_params: u64,
    /// Transformer blocks.
    pub n_layer: u32,
    /// Embedding (hidden) size.
    pub n_embd: u64,
    /// Feed-forward size (largest layer's).
    pub n_ff: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_head_kv: u64,
    /// Dimension of one key head.
    pub head_dim_k: u64,
    /// Dimension of one value head.
    pub head_dim_v: u64,
    /// Vocabulary size.
    pub n_vocab: u64,
    /// BPE merges in the tokenizer.
    pub n_merges: u64,
    /// Bytes of token and merge text in the tokenizer.
    pub tokenizer_text_bytes: u64,
    /// Context length the model was trained with.
    pub n_ctx_train: u64,
    /// Sliding-window attention size, for models that use it (Gemma 2/3, ...).
    pub sliding_window: Option<u64>,
    /// The output projection shares the token-embedding tensor.
    pub tied_embeddings: bool,
    /// Bytes of all tensor data.
    pub weight_bytes: u64,
    /// Bytes the file should have (header + data).
    pub declared_file_bytes: u64,
    /// Bytes the file has on disk.
    pub file_bytes: u64,
    /// Every tensor, with its placement role.
    #[serde(skip)]
    pub tensors: Vec<TensorPlace>,
}

impl ModelShape {
    /// Read the shape of a GGUF model without loading its weights.
    pub fn read(path: &Path) -> Result<ModelShape> {
        let gguf = Gguf::open(path)?;
        ModelShape::from_gguf(&gguf)
    }

    /// The shape from a parsed header.
    // Linear: one metadata lookup and fallback per field; kept whole so every key read is in view.
    pub fn from_gguf(g: &Gguf) -> Result<ModelShape> {
        let missing = |what: &str| {
            Error::Usage(format!(
                "--model {}: the GGUF metadata has no {what}; is it a language model llama.cpp can load?",
                g.path.display()
            ))
        };
        let architecture = g
            .architecture()
            .ok_or_else(|| missing("general.architecture"))?
            .to_string();
        let n_layer = g
            .arch_u64("block_count")
            .ok_or_else(|| missing(&format!("{architecture}.block_count")))?;
        let n_embd = g
            .arch_u64("embedding_length")
            .ok_or_else(|| missing(&format!("{architecture}.embedding_length")))?;
        let n_head = g.arch_u64("attention.head_count").unwrap_or(0);
        let n_head_kv = g.arch_u64("attention.head_count_kv").unwrap_or(n_head);
        let head_dim_k = g
            .arch_u64("attention.key_length")
            .or_else(|| (n_head > 0).then(|| n_embd / n_head))
            .unwrap_or(0);
        let head_dim_v = g.arch_u64("attention.value_length").unwrap_or(head_dim_k);
        let n_ff = g.arch_u64("feed_forward_length").unwrap_or(4 * n_embd);
        let tokens = match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        };
        let merges = match g.get("tokenizer.ggml.merges") {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        };
        let token_embd = g.tensor("token_embd.weight");
        let n_vocab = tokens
            .map(|a| a.len)
            .or_else(|| g.arch_u64("vocab_size"))
            .or_else(|| token_embd.and_then(|t| t.dims.get(1).copied()))
            .unwrap_or(0);
        let n_ctx_train = g.arch_u64("context_length").unwrap_or(2048);
        let sliding_window = g.arch_u64("attention.sliding_window").filter(|&w| w > 0);
        let n_layer_u32 = u32::try_from(n_layer)
            .ok()
            .filter(|&n| n > 0 && n < 100_000)
            .ok_or_else(|| missing("plausible block_count"))?;
        let mut tensors = Vec::with_capacity(g.tensors.len());
        let mut by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut n_params = 0u64;
        for t in &g.tensors {
            let layer = match t.layer() {
                Some(n) if n < n_layer_u32 => LayerRole::Block(n),
                Some(_) => LayerRole::Output,
                None if t.name.starts_with("output") => LayerRole::Output,
                None => LayerRole::Input,
            };
            n_params = n_params.saturating_add(t.elements());
            *by_type.entry(t.type_name()).or_default() += t.bytes;
            tensors.push(TensorPlace {
                name: t.name.clone(),
                bytes: t.bytes,
                ggml_type: t.ggml_type,
                rows: t.dims.get(1).copied().unwrap_or(1),
                layer,
            });
        }
        let weight_bytes: u64 = tensors.iter().map(|t| t.bytes).sum();
        let mut shares: Vec<(&str, u64)> = by_type.into_iter().collect();
        shares.sort_by_key(|s| std::cmp::Reverse(s.1));
        let tensor_types = shares
            .iter()
            .filter(|(_, b)| *b > 0)
            .map(|(name, bytes)| {
                format!(
                    "{name} {:.0}%",
                    100.0 * *bytes as f64 / weight_bytes.max(1) as f64
                )
            })
            .collect();
        let quantization = g
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(gguf::file_type_name)
            .map(str::to_string)
            .unwrap_or_else(|| shares.first().map_or("?".into(), |s| s.0.to_string()));
        let name = g
            .get("general.name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                g.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        Ok(ModelShape {
            name,
            architecture,
            quantization,
            tensor_types,
            n_params,
            n_layer: n_layer_u32,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_vocab,
            n_merges: merges.map_or(0, |m| m.len),
            tokenizer_text_bytes: tokens.map_or(0, |a| a.text_bytes)
                + merges.map_or(0, |a| a.text_bytes),
            n_ctx_train,
            sliding_window,
            tied_embeddings: g.tensor("output.weight").is_none(),
            weight_bytes,
            declared_file_bytes: g.declared_bytes(),
            file_bytes: g.file_bytes,
            tensors,
        })
    }

    /// Whether the file on disk is shorter than its header declares.
    pub fn is_truncated(&self) -> bool {
        self.file_bytes < self.declared_file_bytes
    }

    /// Bytes of one token's keys and values in one layer, at `kv_type_bytes` per element.
    pub fn kv_bytes_per_token_layer(&self, kv_type_bytes: u64) -> u64 {
        self.n_head_kv * (self.head_dim_k + self.head_dim_v) * kv_type_bytes
    }

    /// Size of the query projection output (`n_head * head_dim_k`).
    pub fn q_dim(&self) -> u64 {
        self.n_head * self.head_dim_k
    }
}
