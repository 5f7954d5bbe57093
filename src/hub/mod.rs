//! Finding a checkpoint and reading its tensors.
//!
//! Three parts:
//!
//! * [`resolve_model`] turns `--model M` into a directory on disk: a local
//!   directory, a snapshot already in the Hugging Face cache, or (online) a
//!   fresh download into that same cache.
//! * [`Checkpoint::load`] reads the weights of such a directory
//!   (`model.safetensors`, a sharded safetensors index, or a
//!   `pytorch_model.bin`) into host memory as `f32`, whatever the stored
//!   dtype; [`Checkpoint::load_file`] reads one bare weights file
//!   (safetensors, `torch.save` in the zip or the legacy format, a
//!   TorchScript archive, or an ONNX model's initializers), as vision
//!   checkpoints ship.
//! * [`gguf`] reads llama.cpp's GGUF files: metadata, tensors dequantised to
//!   `f32`, and a `llama` file as a transformers Llama checkpoint with its
//!   `config.json` and tokenizer ([`gguf::load_llama`]).
//!
//! Nothing here touches a device: the model code copies [`HostTensor::data`]
//! into whatever backend it runs on.

mod checkpoint;
pub mod gguf;
pub mod onnx;
mod pickle;
mod resolve;
mod safetensors_io;
mod tensor;

pub use checkpoint::Checkpoint;
pub(crate) use checkpoint::WEIGHT_FILES;
pub use onnx::{OnnxGraph, OnnxModel, OnnxNode, read_onnx};
pub use pickle::{NpArray, read_numpy_pickle, read_pytorch_bin};
pub use resolve::{
    ModelDir, ModelSource, hf_cache_dir, hf_offline, parse_hub_id, resolve_in_cache, resolve_model,
    resolve_model_in,
};
pub use safetensors_io::{read_safetensors, write_safetensors, write_torch_safetensors};
pub use tensor::{DType, HostTensor};
