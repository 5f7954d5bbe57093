//! ONNX models: their initializers as named tensors, and the graph's nodes
//! (operator, inputs, outputs, simple attributes) for families whose
//! weights an exporter left anonymous (`onnx::MatMul_123`) and that must be
//! mapped by walking the graph.
//!
//! The protobuf wire format is decoded by `prost` (tokio-rs, already in our
//! dependency tree). The messages are declared here with `prost`'s derive,
//! only the fields we read, with the field numbers of the official
//! `onnx.proto` (IR version 10); `prost` skips every other field. Why not
//! the alternatives: `onnx-protobuf` (full generated schema) is a
//! one-author MPL-2.0 crate pinned to the generated code of rust-protobuf
//! 3.4; burn's `onnx-ir` is a whole graph importer published only for a
//! pre-release burn (it would pull a second `burn-tensor`); compiling
//! `onnx.proto` at build time needs `protoc` (absent on our machines) or a
//! protobuf compiler crate in the build for six messages.
//!
//! Values are read from `raw_data` (little-endian) or the typed fields
//! (`float_data`, `int32_data`, `int64_data`, `double_data`; half floats as
//! bit patterns in `int32_data`), as the ONNX spec stores them. Tensors
//! stored outside the file (`data_location = EXTERNAL`) are an error naming
//! the tensor and the file it points to. Initializers of types with no
//! [`DType`] (strings, complex, unsigned 16/32/64-bit, 4/8-bit floats) are
//! skipped and counted in the notes. The tensors of `Constant` nodes are
//! included under their output names (some exporters keep weights there).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use prost::Message;

use super::tensor::{DType, HostTensor};

/// `ModelProto`: the fields we read.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    domain: String,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(float, tag = "2")]
    f: f32,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(bytes = "vec", tag = "4")]
    s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    /// `AttributeType`: FLOAT 1, INT 2, STRING 3, TENSOR 4, FLOATS 6, INTS 7.
    #[prost(int32, tag = "20")]
    r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntryProto>,
    /// DEFAULT 0, EXTERNAL 1.
    #[prost(int32, tag = "14")]
    data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// A node attribute we keep (scalars and lists of numbers, strings);
/// tensors, graphs and the rest are [`Attribute::Other`].
#[derive(Clone, Debug, PartialEq)]
pub enum Attribute {
    Float(f32),
    Int(i64),
    String(String),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Other,
}

/// One operator of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxNode {
    /// The node's name (often empty).
    pub name: String,
    /// The operator, e.g. `Conv`, `MatMul`.
    pub op: String,
    /// Names of the values it reads (initializers or other nodes' outputs);
    /// an empty name is an omitted optional input.
    pub inputs: Vec<String>,
    /// Names of the values it writes.
    pub outputs: Vec<String>,
    pub attributes: BTreeMap<String, Attribute>,
}

/// The graph's operators in file order (ONNX requires a topological
/// order), and the names of its inputs and outputs (initializers excluded
/// from `inputs`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnnxGraph {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub nodes: Vec<OnnxNode>,
}

impl OnnxGraph {
    /// The nodes that read the value `name`, in order.
    pub fn consumers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a OnnxNode> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.inputs.iter().any(|i| i == name))
    }

    /// The node that writes the value `name`.
    pub fn producer(&self, name: &str) -> Option<&OnnxNode> {
        self.nodes
            .iter()
            .find(|n| n.outputs.iter().any(|o| o == name))
    }
}

/// What [`read_onnx`] found.
#[derive(Clone, Debug, Default)]
pub struct OnnxModel {
    /// Initializers (and `Constant` node tensors), by name.
    pub tensors: BTreeMap<String, HostTensor>,
    pub graph: OnnxGraph,
    /// What was read: producer, opsets, anything skipped.
    pub notes: Vec<String>,
}

/// Whether the first bytes of a file look like an ONNX `ModelProto`
/// (field 1, `ir_version`, a small varint, then another field).
pub(crate) fn looks_like_onnx(head: &[u8]) -> bool {
    head.len() > 2 && head[0] == 0x08 && head[1] < 0x80 && head[2] & 0x07 <= 2
}

/// Reads the ONNX model at `path`: initializers as `f32` host tensors, the
/// graph's nodes. Errors name the file and what is wrong.
pub fn read_onnx(path: &Path) -> Result<OnnxModel> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_onnx(&bytes, path)
}

/// [`read_onnx`] of bytes already read (`path` names them in messages).
pub fn decode_onnx(bytes: &[u8], path: &Path) -> Result<OnnxModel> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid ONNX model ({e}); the file may be truncated or not ONNX at all: \
             download or export it again",
            path.display()
        )
    })?;
    let Some(graph) = model.graph else {
        bail!(
            "{} is an ONNX model without a graph (ir_version {}): it holds no weights",
            path.display(),
            model.ir_version
        );
    };
    let mut notes = vec![format!(
        "ONNX model (ir_version {}, opset {}{})",
        model.ir_version,
        model
            .opset_import
            .iter()
            .map(|o| {
                let domain = if o.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &o.domain
                };
                format!("{domain} {}", o.version)
            })
            .collect::<Vec<_>>()
            .join(", "),
        if model.producer_name.is_empty() {
            String::new()
        } else {
            format!(
                ", written by {} {}",
                model.producer_name, model.producer_version
            )
        }
    )];
    let mut tensors = BTreeMap::new();
    let mut skipped: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut take = |t: &TensorProto, name: &str| -> Result<()> {
        match to_host(t, name, path)? {
            Ok(h) => {
                tensors.insert(name.to_string(), h);
            }
            Err(kind) => skipped.entry(kind).or_default().push(name.to_string()),
        }
        Ok(())
    };
    for t in &graph.initializer {
        take(t, &t.name)?;
    }
    let mut constants = 0;
    for n in &graph.node {
        if n.op_type == "Constant"
            && n.domain.is_empty()
            && let (Some(out), Some(t)) = (
                n.output.first(),
                n.attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref()),
            )
        {
            take(t, out)?;
            constants += 1;
        }
    }
    if constants > 0 {
        notes.push(format!(
            "{constants} tensors of Constant nodes included under their output names"
        ));
    }
    for (kind, names) in skipped {
        notes.push(format!(
            "skipped {} initializer(s) of type {kind}, which headstart does not read: {}",
            names.len(),
            names.join(", ")
        ));
    }
    let initializer_names: std::collections::BTreeSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let onnx_graph = OnnxGraph {
        inputs: graph
            .input
            .iter()
            .map(|v| v.name.clone())
            .filter(|n| !initializer_names.contains(n.as_str()))
            .collect(),
        outputs: graph.output.iter().map(|v| v.name.clone()).collect(),
        nodes: graph
            .node
            .iter()
            .map(|n| OnnxNode {
                name: n.name.clone(),
                op: n.op_type.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attributes: n
                    .attribute
                    .iter()
                    .map(|a| (a.name.clone(), attribute(a)))
                    .collect(),
            })
            .collect(),
    };
    Ok(OnnxModel {
        tensors,
        graph: onnx_graph,
        notes,
    })
}

fn attribute(a: &AttributeProto) -> Attribute {
    match a.r#type {
        1 => Attribute::Float(a.f),
        2 => Attribute::Int(a.i),
        3 => Attribute::String(String::from_utf8_lossy(&a.s).into_owned()),
        6 => Attribute::Floats(a.floats.clone()),
        7 => Attribute::Ints(a.ints.clone()),
        _ => Attribute::Other,
    }
}

/// The element type of ONNX `TensorProto.DataType` code `code`, or the
/// ONNX name of a type we do not read.
fn dtype_of(code: i32) -> std::result::Result<DType, &'static str> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        16 => DType::BF16,
        0 => return Err("UNDEFINED"),
        4 => return Err("UINT16"),
        8 => return Err("STRING"),
        12 => return Err("UINT32"),
        13 => return Err("UINT64"),
        14 => return Err("COMPLEX64"),
        15 => return Err("COMPLEX128"),
        17..=20 | 23 => return Err("FLOAT8/FLOAT4"),
        21 | 22 => return Err("INT4/UINT4"),
        _ => return Err("unknown"),
    })
}

/// The tensor `name` in host memory; `Ok(Err(type))` for a type we skip.
fn to_host(
    t: &TensorProto,
    name: &str,
    path: &Path,
) -> Result<std::result::Result<HostTensor, &'static str>> {
    let ctx = || format!("{}: tensor `{name}`", path.display());
    if t.data_location == 1 || !t.external_data.is_empty() {
        let location = t
            .external_data
            .iter()
            .find(|e| e.key == "location")
            .map(|e| e.value.as_str())
            .unwrap_or("?");
        bail!(
            "{}: tensor `{name}` is stored outside the file (external data in `{location}`): \
             headstart reads self-contained ONNX files; save the model again with its weights \
             inside (onnx.save_model(model, path, save_as_external_data=False))",
            path.display()
        );
    }
    let dtype = match dtype_of(t.data_type) {
        Ok(d) => d,
        Err(kind) => return Ok(Err(kind)),
    };
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| anyhow::anyhow!("{} has a negative dimension {:?}", ctx(), t.dims))?;
    let numel: usize = shape.iter().product();
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        dtype.decode_le(&t.raw_data).with_context(ctx)?
    } else {
        match dtype {
            DType::F32 => t.float_data.clone(),
            DType::F64 => t.double_data.iter().map(|&v| v as f32).collect(),
            DType::I64 => t.int64_data.iter().map(|&v| v as f32).collect(),
            DType::F16 => t
                .int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16).to_f32())
                .collect(),
            DType::BF16 => t
                .int32_data
                .iter()
                .map(|&v| half::bf16::from_bits(v as u16).to_f32())
                .collect(),
            DType::Bool => t
                .int32_data
                .iter()
                .map(|&v| if v != 0 { 1.0 } else { 0.0 })
                .collect(),
            // INT32, INT16, INT8, UINT8 hold their values in int32_data
            _ => t.int32_data.iter().map(|&v| v as f32).collect(),
        }
    };
    if data.len() != numel {
        bail!(
            "{} has {} values for shape {shape:?} ({numel} expected): the file is damaged",
            ctx(),
            data.len()
        );
    }
    Ok(Ok(HostTensor { shape, dtype, data }))
}

/// Writes ONNX models for tests (the reader's own messages, so that the
/// tests need no Python).
#[cfg(test)]
pub(crate) mod write {
    use super::*;

    pub struct Init<'a> {
        pub name: &'a str,
        pub dims: &'a [i64],
        pub data_type: i32,
        pub raw: Option<Vec<u8>>,
        pub floats: Vec<f32>,
        pub int64s: Vec<i64>,
        pub int32s: Vec<i32>,
        pub doubles: Vec<f64>,
        pub external: Option<&'a str>,
    }

    impl<'a> Init<'a> {
        pub fn new(name: &'a str, dims: &'a [i64], data_type: i32) -> Self {
            Self {
                name,
                dims,
                data_type,
                raw: None,
                floats: vec![],
                int64s: vec![],
                int32s: vec![],
                doubles: vec![],
                external: None,
            }
        }
    }

    /// An ONNX model with `inits` and `nodes` (op, inputs, outputs).
    pub fn model(inits: &[Init], nodes: &[(&str, &[&str], &[&str])]) -> Vec<u8> {
        let tensor = |i: &Init| TensorProto {
            dims: i.dims.to_vec(),
            data_type: i.data_type,
            float_data: i.floats.clone(),
            int32_data: i.int32s.clone(),
            int64_data: i.int64s.clone(),
            name: i.name.to_string(),
            raw_data: i.raw.clone().unwrap_or_default(),
            double_data: i.doubles.clone(),
            external_data: i
                .external
                .map(|l| {
                    vec![StringStringEntryProto {
                        key: "location".into(),
                        value: l.into(),
                    }]
                })
                .unwrap_or_default(),
            data_location: i32::from(i.external.is_some()),
        };
        ModelProto {
            ir_version: 7,
            producer_name: "headstart-test".into(),
            producer_version: "1".into(),
            graph: Some(GraphProto {
                node: nodes
                    .iter()
                    .map(|(op, ins, outs)| NodeProto {
                        input: ins.iter().map(|s| s.to_string()).collect(),
                        output: outs.iter().map(|s| s.to_string()).collect(),
                        name: String::new(),
                        op_type: op.to_string(),
                        attribute: if *op == "Conv" {
                            vec![AttributeProto {
                                name: "pads".into(),
                                ints: vec![1, 1, 1, 1],
                                r#type: 7,
                                ..AttributeProto::default()
                            }]
                        } else {
                            vec![]
                        },
                        domain: String::new(),
                    })
                    .collect(),
                name: "g".into(),
                initializer: inits.iter().map(tensor).collect(),
                input: vec![ValueInfoProto { name: "x".into() }],
                output: vec![ValueInfoProto { name: "y".into() }],
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::write::{Init, model};
    use super::*;

    fn le32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_raw_and_typed_initializers_and_the_graph() {
        let f16: Vec<i32> = [0.5f32, -2.0]
            .iter()
            .map(|v| i32::from(half::f16::from_f32(*v).to_bits()))
            .collect();
        let inits = [
            Init {
                raw: Some(le32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
                ..Init::new("w", &[2, 3], 1)
            },
            Init {
                floats: vec![0.25, -0.5],
                ..Init::new("b", &[2], 1)
            },
            Init {
                int64s: vec![7, -9, 11],
                ..Init::new("shape", &[3], 7)
            },
            Init {
                int32s: f16,
                ..Init::new("h", &[2], 10)
            },
            Init {
                doubles: vec![1.5],
                ..Init::new("d", &[], 11)
            },
            Init {
                raw: Some(vec![1, 2]),
                ..Init::new("u16", &[1], 4)
            },
        ];
        let bytes = model(
            &inits,
            &[
                ("MatMul", &["x", "w"], &["xw"]),
                ("Add", &["xw", "b"], &["y"]),
            ],
        );
        let m = decode_onnx(&bytes, Path::new("m.onnx")).unwrap();
        let w = &m.tensors["w"];
        assert_eq!(
            (w.shape.as_slice(), w.dtype),
            ([2usize, 3].as_slice(), DType::F32)
        );
        assert_eq!(w.data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(m.tensors["b"].data, [0.25, -0.5]);
        assert_eq!(m.tensors["shape"].data, [7.0, -9.0, 11.0]);
        assert_eq!(m.tensors["shape"].dtype, DType::I64);
        assert_eq!(m.tensors["h"].data, [0.5, -2.0]);
        assert_eq!(m.tensors["d"].shape, Vec::<usize>::new());
        assert_eq!(m.tensors["d"].data, [1.5]);
        assert!(!m.tensors.contains_key("u16"));
        assert!(
            m.notes.iter().any(|n| n.contains(
                "skipped 1 initializer(s) of type UINT16, which headstart does not read: u16"
            )),
            "{:?}",
            m.notes
        );
        assert!(
            m.notes[0].contains("ir_version 7, opset ai.onnx 13"),
            "{:?}",
            m.notes
        );
        assert_eq!(m.graph.inputs, ["x"]);
        assert_eq!(m.graph.outputs, ["y"]);
        assert_eq!(m.graph.nodes.len(), 2);
        assert_eq!(m.graph.nodes[0].op, "MatMul");
        assert_eq!(m.graph.nodes[1].inputs, ["xw", "b"]);
        assert_eq!(m.graph.consumers("w").next().unwrap().op, "MatMul");
        assert_eq!(m.graph.producer("y").unwrap().op, "Add");
    }

    #[test]
    fn bad_files_are_named_errors() {
        let p = Path::new("dir/model.onnx");
        // external data
        let bytes = model(
            &[Init {
                external: Some("weights.bin"),
                ..Init::new("w", &[2], 1)
            }],
            &[],
        );
        let err = decode_onnx(&bytes, p).unwrap_err().to_string();
        assert!(
            err.contains("dir/model.onnx")
                && err.contains("`w`")
                && err.contains("weights.bin")
                && err.contains("save_as_external_data=False"),
            "{err}"
        );
        // wrong number of values
        let bytes = model(
            &[Init {
                floats: vec![1.0],
                ..Init::new("w", &[2, 2], 1)
            }],
            &[],
        );
        let err = decode_onnx(&bytes, p).unwrap_err().to_string();
        assert!(err.contains("`w` has 1 values for shape [2, 2]"), "{err}");
        // raw bytes not a whole number of elements
        let bytes = model(
            &[Init {
                raw: Some(vec![0, 0, 0]),
                ..Init::new("w", &[1], 1)
            }],
            &[],
        );
        let err = format!("{:#}", decode_onnx(&bytes, p).unwrap_err());
        assert!(err.contains("`w`") && err.contains("3 bytes"), "{err}");
        // not protobuf at all, and a model with no graph
        let err = decode_onnx(b"\x08\x07\x12\xff", p).unwrap_err().to_string();
        assert!(err.contains("is not a valid ONNX model"), "{err}");
        let err = decode_onnx(b"\x08\x07", p).unwrap_err().to_string();
        assert!(err.contains("without a graph"), "{err}");
    }
}
