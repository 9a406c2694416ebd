//! What the estimator needs to know about a model, read from its GGUF header alone.

use super::estimate;
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

    /// The shape from a parsed header. A header whose sizes are impossible (a hyperparameter
    /// wider than llama.cpp's 32-bit fields, sums or memory terms past 2^64) is an input error
    /// naming the file.
    // Linear: one metadata lookup and fallback per field; kept whole so every key read is in view.
    pub fn from_gguf(g: &Gguf) -> Result<ModelShape> {
        let missing = |what: &str| {
            Error::Usage(format!(
                "--model {}: the GGUF metadata has no {what}; is it a language model llama.cpp can load?",
                g.path.display()
            ))
        };
        let corrupt = |what: String| {
            Error::Usage(format!(
                "--model {}: the GGUF header is corrupt: {what}",
                g.path.display()
            ))
        };
        let architecture = g
            .architecture()
            .ok_or_else(|| missing("general.architecture"))?
            .to_string();
        // llama.cpp keeps every hyperparameter in a 32-bit field; a wider value is no model.
        let narrow = |what: &str, value: u64| {
            if value > u64::from(u32::MAX) {
                return Err(corrupt(format!(
                    "{what} is {value}, more than llama.cpp's 32-bit field holds"
                )));
            }
            Ok(value)
        };
        let hparam = |suffix: &str| -> std::result::Result<Option<u64>, Error> {
            g.arch_u64(suffix)
                .map(|v| narrow(&format!("{architecture}.{suffix}"), v))
                .transpose()
        };
        let n_layer = hparam("block_count")?
            .ok_or_else(|| missing(&format!("{architecture}.block_count")))?;
        let n_embd = hparam("embedding_length")?
            .ok_or_else(|| missing(&format!("{architecture}.embedding_length")))?;
        let n_head = hparam("attention.head_count")?.unwrap_or(0);
        let n_head_kv = hparam("attention.head_count_kv")?.unwrap_or(n_head);
        let head_dim_k = hparam("attention.key_length")?
            .or_else(|| (n_head > 0).then(|| n_embd / n_head))
            .unwrap_or(0);
        let head_dim_v = hparam("attention.value_length")?.unwrap_or(head_dim_k);
        let n_ff = hparam("feed_forward_length")?.unwrap_or(4 * n_embd);
        let tokens = match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        };
        let merges = match g.get("tokenizer.ggml.merges") {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        };
        let token_embd = g.tensor("token_embd.weight");
        let n_vocab = match (tokens, hparam("vocab_size")) {
            (Some(a), _) => a.len,
            (None, vocab_size) => vocab_size?
                .or_else(|| token_embd.and_then(|t| t.dims.get(1).copied()))
                .unwrap_or(0),
        };
        let n_vocab = narrow("the vocabulary size", n_vocab)?;
        let n_merges = narrow("the BPE merge count", merges.map_or(0, |m| m.len))?;
        let n_ctx_train = hparam("context_length")?.unwrap_or(2048);
        let sliding_window = hparam("attention.sliding_window")?.filter(|&w| w > 0);
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
            n_params = n_params
                .checked_add(t.elements())
                .ok_or_else(|| corrupt("its tensors hold more than 2^64 parameters".into()))?;
            let typed = by_type.entry(t.type_name()).or_default();
            *typed = typed
                .checked_add(t.bytes)
                .ok_or_else(|| corrupt("its tensor sizes add up past 2^64 bytes".into()))?;
            tensors.push(TensorPlace {
                name: t.name.clone(),
                bytes: t.bytes,
                ggml_type: t.ggml_type,
                rows: t.dims.get(1).copied().unwrap_or(1),
                layer,
            });
        }
        let weight_bytes = tensors
            .iter()
            .try_fold(0u64, |sum, t| sum.checked_add(t.bytes))
            .ok_or_else(|| corrupt("its tensor sizes add up past 2^64 bytes".into()))?;
        let tokenizer_text_bytes = tokens
            .map_or(0, |a| a.text_bytes)
            .checked_add(merges.map_or(0, |a| a.text_bytes))
            .ok_or_else(|| corrupt("its tokenizer text adds up past 2^64 bytes".into()))?;
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
        let shape = ModelShape {
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
            n_merges,
            tokenizer_text_bytes,
            n_ctx_train,
            sliding_window,
            tied_embeddings: g.tensor("output.weight").is_none(),
            weight_bytes,
            declared_file_bytes: g.declared_bytes(),
            file_bytes: g.file_bytes,
            tensors,
        };
        if let Some(term) = estimate::overflowing_term(&shape) {
            return Err(corrupt(format!(
                "its sizes overflow 64-bit arithmetic ({term} at the trained context of {} tokens)",
                shape.n_ctx_train
            ))
            .into());
        }
        Ok(shape)
    }

    /// Whether the file on disk is shorter than its header declares.
    pub fn is_truncated(&self) -> bool {
        self.file_bytes < self.declared_file_bytes
    }

    /// Bytes of one token's keys and values in one layer, at `kv_type_bytes` per element
    /// (saturating: `u64::MAX` means "more than any machine has").
    pub fn kv_bytes_per_token_layer(&self, kv_type_bytes: u64) -> u64 {
        self.n_head_kv
            .saturating_mul(self.head_dim_k.saturating_add(self.head_dim_v))
            .saturating_mul(kv_type_bytes)
    }

    /// Size of the query projection output (`n_head * head_dim_k`, saturating).
    pub fn q_dim(&self) -> u64 {
        self.n_head.saturating_mul(self.head_dim_k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_probe::property_config;
    use crate::gguf::tests::Writer;
    use crate::preflight::estimate::{estimate, Estimate, Plan, Repack};
    use proptest::prelude::*;
    use proptest::test_runner::{TestCaseError, TestRunner};

    /// Hyperparameters, each written as a `uint64` key (`None`: left out).
    #[derive(Debug, Clone)]
    struct Header {
        block_count: u64,
        values: Vec<(&'static str, Option<u64>)>,
        tensors: Vec<(&'static str, Vec<u64>, u32)>,
    }

    fn write_header(dir: &Path, name: &str, h: &Header) -> std::path::PathBuf {
        let present = h.values.iter().filter(|(_, v)| v.is_some()).count() as u64;
        let mut w = Writer::new(3, h.tensors.len() as u64, 2 + present);
        w.kv_str("general.architecture", "llama");
        w.kv_u64("llama.block_count", h.block_count);
        for (key, value) in &h.values {
            if let Some(v) = value {
                w.kv_u64(&format!("llama.{key}"), *v);
            }
        }
        for (name, dims, ty) in &h.tensors {
            w.tensor(name, dims, *ty, 0);
        }
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, &w.0).unwrap();
        path
    }

    fn header(values: &[(&'static str, u64)]) -> Header {
        Header {
            block_count: 2,
            values: values.iter().map(|&(k, v)| (k, Some(v))).collect(),
            tensors: vec![],
        }
    }

    fn usage_error(path: &Path) -> String {
        let error = ModelShape::read(path).unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error.downcast_ref(), Some(Error::Usage(_))),
            "{text}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");
        text
    }

    #[test]
    fn overflowing_header_sizes_are_input_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let sane = [
            ("embedding_length", 64),
            ("attention.head_count", 4),
            ("context_length", 4096),
        ];
        let path = write_header(dir.path(), "sane.gguf", &header(&sane));
        let shape = ModelShape::read(&path).unwrap();
        assert_eq!((shape.n_embd, shape.head_dim_k, shape.n_layer), (64, 16, 2));

        let wide = header(&[
            ("embedding_length", 64),
            ("attention.head_count_kv", 1 << 40),
        ]);
        let path = write_header(dir.path(), "wide.gguf", &wide);
        assert!(usage_error(&path).contains("llama.attention.head_count_kv is 1099511627776, more than llama.cpp's 32-bit field holds"));

        // Every factor of the KV cache fits in 32 bits; their product does not fit in 64.
        let kv = header(&[
            ("embedding_length", 64),
            ("attention.head_count_kv", u64::from(u32::MAX)),
            ("attention.key_length", u64::from(u32::MAX)),
            ("attention.value_length", u64::from(u32::MAX)),
        ]);
        let path = write_header(dir.path(), "kv.gguf", &kv);
        assert!(
            usage_error(&path).contains("overflow 64-bit arithmetic (the KV cache"),
            "{}",
            usage_error(&path)
        );

        // Two tensors of 2^63 bytes each: each is fine, their sum is not.
        let mut big = header(&sane);
        big.tensors = vec![
            ("blk.0.ffn_up.weight", vec![1 << 31, 1 << 30], 0),
            ("blk.1.ffn_up.weight", vec![1 << 31, 1 << 30], 0),
        ];
        let path = write_header(dir.path(), "sum.gguf", &big);
        assert!(usage_error(&path).contains("add up past 2^64"));
    }

    fn plan(ctx_per_seq: u32, n_seq: u32, n_batch: u32, gpu_layers: u32) -> Plan {
        Plan {
            ctx_per_seq,
            n_seq,
            n_batch,
            gpu_layers,
            largest_batch: None,
            logits_rows: None,
            process_baseline: 1 << 20,
            gpu_backend: true,
            repack: Repack {
                avx2: true,
                avx512: false,
                neon_dotprod: false,
            },
        }
    }

    #[test]
    fn an_absurd_plan_saturates_instead_of_wrapping_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        // 2^20 KV heads of 2^10 + 2^10 dimensions at 2 bytes: 2^32 bytes a token and layer. At
        // 2^32 cells that is exactly 2^64, which wrapped to a KV cache of 0 bytes.
        let h = header(&[
            ("embedding_length", 64),
            ("attention.head_count_kv", 1 << 20),
            ("attention.key_length", 1 << 10),
            ("attention.value_length", 1 << 10),
            ("context_length", 4096),
        ]);
        let shape = ModelShape::read(&write_header(dir.path(), "kv.gguf", &h)).unwrap();
        let e = estimate(&shape, &plan(1 << 24, 1 << 8, 512, 0));
        assert_eq!(e.n_ctx, 1 << 32);
        assert_eq!((e.host.kv_cache, e.host_peak), (u64::MAX, u64::MAX));
        let gpu = estimate(&shape, &plan(1 << 24, 1 << 8, 512, 3));
        assert_eq!((gpu.gpu.kv_cache, gpu.gpu_peak), (u64::MAX, u64::MAX));
    }

    /// Wrapping arithmetic shows as an estimate that shrinks when the context grows, or a total
    /// below one of its parts.
    fn no_wrap(small: &Estimate, large: &Estimate) -> std::result::Result<(), TestCaseError> {
        prop_assert!(large.host_peak >= small.host_peak);
        prop_assert!(large.gpu_peak >= small.gpu_peak);
        prop_assert!(large.host.kv_cache >= small.host.kv_cache);
        prop_assert!(large.gpu.kv_cache >= small.gpu.kv_cache);
        prop_assert!(large.host_compute_reserved >= small.host_compute_reserved);
        for e in [small, large] {
            let host = &e.host;
            for part in [host.weights, host.repacked, host.kv_cache, host.compute] {
                prop_assert!(e.host_peak >= part);
            }
            prop_assert!(e.host_peak >= host.vocab_and_outputs);
            if e.gpu_layers > 0 {
                prop_assert!(e.gpu_peak >= e.gpu.kv_cache && e.gpu_peak >= e.gpu.weights);
            }
        }
        Ok(())
    }

    fn hparam() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![
            Just(None),
            (1u64..=8192).prop_map(Some),
            (0u32..64).prop_map(|k| Some(1u64 << k)),
            any::<u32>().prop_map(|v| Some(u64::from(v))),
            any::<u64>().prop_map(Some),
        ]
    }

    #[test]
    fn property_header_sizes_never_wrap_the_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
            "attention.key_length",
            "attention.value_length",
            "context_length",
            "vocab_size",
            "attention.sliding_window",
        ];
        let header = (
            prop_oneof![1u64..=200, 1u64..=100_000, any::<u64>()],
            proptest::collection::vec(hparam(), keys.len()),
            prop_oneof![Just(vec![1u64]), Just(vec![256, 4096])],
        );
        let plans = (
            any::<u32>(),
            any::<u32>(),
            1u32..=512,
            1u32..=4096,
            any::<u32>(),
        );
        let mut runner = TestRunner::new(property_config(1000));
        runner
            .run(
                &(header, plans),
                |((block_count, values, dims), (c1, c2, n_seq, n_batch, layers))| {
                    let h = Header {
                        block_count,
                        values: keys.iter().copied().zip(values).collect(),
                        tensors: vec![
                            ("token_embd.weight", dims.clone(), 12),
                            ("blk.0.attn_q.weight", dims, 2),
                        ],
                    };
                    let path = write_header(dir.path(), "h.gguf", &h);
                    let shape = match ModelShape::read(&path) {
                        Ok(shape) => shape,
                        Err(error) => {
                            let text = error.to_string();
                            prop_assert!(
                                matches!(error.downcast_ref(), Some(Error::Usage(_))),
                                "{text}"
                            );
                            prop_assert!(text.contains(&path.display().to_string()), "{text}");
                            return Ok(());
                        }
                    };
                    prop_assert!(estimate::overflowing_term(&shape).is_none());
                    let layers = layers % (shape.n_layer + 2);
                    let (c1, c2) = (c1.min(c2), c1.max(c2));
                    let small = estimate(&shape, &plan(c1, n_seq, n_batch, layers));
                    let large = estimate(&shape, &plan(c2, n_seq, n_batch, layers));
                    no_wrap(&small, &large)
                },
            )
            .unwrap();
    }
}
