//! The pickle virtual machine: the values it builds and the opcodes and
//! globals of a state_dict, a TorchScript module tree or a numpy array
//! (see [`super::numpy`]). It never imports or
//! calls anything: the few callables it knows (the tensor rebuilders,
//! `OrderedDict`) are interpreted, an unknown tensor rebuilder is an error
//! naming it, and any other global becomes an inert [`Object`] whose class
//! name is recorded (see [`Unpickler::unknown_classes`]) so that a loader
//! that finds no tensors can say what the pickle held instead.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use anyhow::{Result, bail};

use super::super::tensor::DType;
use super::numpy::{self, NpArray, NpDtype};

/// A storage: `numel` elements of `dtype`, found by `key` (archive member
/// `data/<key>` of a zip file, or the record `key` of a legacy file).
#[derive(Debug)]
pub(super) struct Storage {
    pub(super) dtype: DType,
    pub(super) key: String,
    pub(super) numel: usize,
    /// Where a legacy storage *view* starts in its root storage `key`, in
    /// elements (0 for a whole storage); added to the offsets of the tensors
    /// built on it.
    pub(super) view_offset: usize,
}

/// A strided view of a storage, as `_rebuild_tensor_v2` describes it
/// (offset and strides in elements).
#[derive(Debug)]
pub(super) struct TensorRef {
    pub(super) storage: Rc<Storage>,
    pub(super) offset: usize,
    pub(super) size: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// An instance of a class the VM does not know, kept inert: its class name
/// and the state a `BUILD` gave it (for a TorchScript module, the dict of
/// its attributes: parameters, buffers, child modules, settings).
#[derive(Debug)]
pub(super) struct Object {
    pub(super) class: String,
    pub(super) state: RefCell<Option<Value>>,
}

/// A pickle value. Lists and dicts are shared and mutable (the memo holds
/// them before they are filled).
#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, as its little-endian two's complement
    /// bytes (the magic number of the legacy torch format is one).
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    /// A bytes object (a numpy array's raw data).
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value]>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Rc<(String, String)>),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
    Object(Rc<Object>),
    /// A numpy array made by `_reconstruct`, filled in by BUILD.
    NdArray(Rc<RefCell<Option<NpArray>>>),
    /// A numpy dtype made by `numpy.dtype(descr, ...)`; BUILD sets its byte order.
    NpDtype(Rc<RefCell<NpDtype>>),
}

impl Value {
    pub(super) fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
            Value::Object(o) => format!("{} object", o.class),
            Value::NdArray(_) => "numpy.ndarray".into(),
            Value::NpDtype(_) => "numpy.dtype".into(),
        }
    }

    /// Short description for messages: scalars by value, the rest by kind.
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) if s.len() <= 40 => format!("{s:?}"),
            other => other.kind(),
        }
    }

    fn new_dict() -> Value {
        Value::Dict(Rc::new(RefCell::new(Vec::new())))
    }

    /// The value under string key `key` of a dict (the first one, as
    /// pickles do not repeat keys).
    pub(super) fn get(&self, key: &str) -> Option<Value> {
        let Value::Dict(d) = self else {
            return None;
        };
        d.borrow()
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
            .map(|(_, v)| v.clone())
    }
}

/// Storage class name (`torch.FloatStorage`, ...) -> element type.
fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

/// The pickle VM. `what` names the pickle in messages (file and member).
pub(super) struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    unknown: BTreeSet<String>,
    storages: HashMap<String, Rc<Storage>>,
}

impl<'a> Unpickler<'a> {
    pub(super) fn new(data: &'a [u8], what: &'a str) -> Self {
        Unpickler {
            data,
            pos: 0,
            what,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            unknown: BTreeSet::new(),
            storages: HashMap::new(),
        }
    }

    /// Bytes consumed so far (after [`Unpickler::run`]: the pickle's length,
    /// where the next pickle of a legacy file starts).
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Classes (`module.name`) the pickle instantiated that the VM does not
    /// know and kept as inert objects, e.g. `argparse.Namespace`.
    pub(super) fn unknown_classes(&self) -> &BTreeSet<String> {
        &self.unknown
    }

    /// Every storage the pickle referred to, by key (a legacy file stores
    /// all of them, including those of tensors a loader does not keep).
    pub(super) fn storages(&self) -> &HashMap<String, Rc<Storage>> {
        &self.storages
    }

    fn corrupt(&self, why: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} is corrupt ({why} at byte {}): re-download the checkpoint",
            self.what,
            self.pos
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.corrupt(&format!("wants {n} more bytes but the pickle ends")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len_u64(&mut self) -> Result<usize> {
        let n = u64::from_le_bytes(self.arr()?);
        usize::try_from(n).map_err(|_| self.corrupt("length does not fit in memory"))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.corrupt("GLOBAL without a newline"))?;
        let s = std::str::from_utf8(&rest[..nl])
            .map_err(|_| self.corrupt("GLOBAL name is not UTF-8"))?
            .to_owned();
        self.pos += nl + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.corrupt("string is not UTF-8"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack
            .pop()
            .ok_or_else(|| self.corrupt("stack underflow"))
    }

    fn top(&mut self) -> Result<&mut Value> {
        match self.stack.last_mut() {
            Some(v) => Ok(v),
            None => Err(anyhow::anyhow!(
                "{} is corrupt (empty stack at byte {}): re-download the checkpoint",
                self.what,
                self.pos
            )),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| self.corrupt("no MARK"))?;
        if m > self.stack.len() {
            return Err(self.corrupt("MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&self, i: u32) -> Result<Value> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| self.corrupt(&format!("memo entry {i} read before it was written")))
    }

    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.corrupt("memoize on an empty stack"))?;
        self.memo.insert(i, v);
        Ok(())
    }

    fn setitems(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.corrupt("odd number of items for a dict"));
        }
        let top = self.top()?.clone();
        let Value::Dict(d) = top else {
            return Err(self.corrupt(&format!("SETITEM on a {}", top.kind())));
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn appends(&mut self, items: Vec<Value>) -> Result<()> {
        let top = self.top()?.clone();
        match top {
            Value::List(l) => l.borrow_mut().extend(items),
            // Appending to an unknown object (e.g. a custom container): ignore.
            Value::Object(_) => {}
            other => return Err(self.corrupt(&format!("APPEND on a {}", other.kind()))),
        }
        Ok(())
    }

    /// Runs the pickle to its STOP and returns the result.
    pub(super) fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = *self
                .data
                .get(self.pos)
                .ok_or_else(|| self.corrupt("the pickle ends without STOP"))?;
            self.pos += 1;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.arr::<1>()?[0];
                    if p > 5 {
                        bail!(
                            "{} uses pickle protocol {p}; headstart reads 2 to 5",
                            self.what
                        );
                    }
                }
                0x95 => {
                    // FRAME: a length hint only
                    self.arr::<8>()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::new_dict()),
                b']' => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b')' => self.stack.push(Value::Tuple(Rc::from(Vec::new()))),
                b'N' => self.stack.push(Value::None),
                0x88 | 0x89 => self.stack.push(Value::Bool(op == 0x88)),
                b'X' => {
                    let n = u32::from_le_bytes(self.arr()?) as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.arr::<1>()?[0] as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'U' | b'T' => {
                    // SHORT_BINSTRING, BINSTRING: Python 2 `str`, read as
                    // UTF-8 like torch.load's default encoding
                    let n = if op == b'U' {
                        self.arr::<1>()?[0] as usize
                    } else {
                        u32::from_le_bytes(self.arr()?) as usize
                    };
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'C' | b'B' | 0x8e => {
                    // SHORT_BINBYTES, BINBYTES, BINBYTES8
                    let n = match op {
                        b'C' => self.arr::<1>()?[0] as usize,
                        b'B' => u32::from_le_bytes(self.arr()?) as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(Rc::from(b)));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.arr::<1>()?[0];
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arr()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    // LONG1, LONG4: little-endian two's complement
                    let n = if op == 0x8a {
                        self.arr::<1>()?[0] as usize
                    } else {
                        u32::from_le_bytes(self.arr()?) as usize
                    };
                    let b = self.take(n)?;
                    if n > 8 {
                        self.stack.push(Value::BigInt(Rc::from(b)));
                        continue;
                    }
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        0xFF
                    } else {
                        0
                    };
                    let mut a = [fill; 8];
                    a[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(a)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arr()?);
                    self.stack.push(Value::Float(v));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.corrupt("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::new_dict());
                    self.setitems(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.setitems(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.setitems(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.appends(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.appends(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.corrupt("STACK_GLOBAL without two strings"));
                    };
                    self.stack.push(Value::Global(Rc::new((
                        module.to_string(),
                        name.to_string(),
                    ))));
                }
                b'R' | 0x81 => {
                    // REDUCE, NEWOBJ: callable(*args)
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(&func, &args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: numpy arrays and dtypes take their state, an
                    // object (a TorchScript module) keeps its state; that of
                    // an OrderedDict (`_metadata`) carries nothing we need.
                    let state = self.pop()?;
                    match self.top()?.clone() {
                        Value::NdArray(a) => {
                            let built = numpy::build_array(&state)
                                .map_err(|e| anyhow::anyhow!("{}: {e:#}", self.what))?;
                            *a.borrow_mut() = Some(built);
                        }
                        Value::NpDtype(d) => {
                            numpy::build_dtype(&mut d.borrow_mut(), &state)
                                .map_err(|e| anyhow::anyhow!("{}: {e:#}", self.what))?;
                        }
                        Value::Object(o) => {
                            let mut slot = o.state.borrow_mut();
                            if slot.is_none() {
                                *slot = Some(state);
                            }
                        }
                        _ => {}
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
                    if let Value::Storage(st) = &v {
                        match self.storages.get(&st.key) {
                            Some(seen) if seen.dtype != st.dtype || seen.numel != st.numel => {
                                return Err(self.corrupt(&format!(
                                    "storage {} is used as {} x {} and as {} x {}",
                                    st.key, seen.numel, seen.dtype, st.numel, st.dtype
                                )));
                            }
                            Some(_) => {}
                            None => {
                                self.storages.insert(st.key.clone(), st.clone());
                            }
                        }
                    }
                    self.stack.push(v);
                }
                b'q' => {
                    let i = u32::from(self.arr::<1>()?[0]);
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.arr()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len())
                        .map_err(|_| self.corrupt("memo overflow"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = u32::from(self.arr::<1>()?[0]);
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.arr()?);
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                other => {
                    let shown = if other.is_ascii_graphic() {
                        format!(" ('{}')", other as char)
                    } else {
                        String::new()
                    };
                    bail!(
                        "{} uses pickle opcode 0x{other:02x}{shown} at byte {at}, which \
                         headstart does not read: re-save the weights as safetensors \
                         (safetensors.torch.save_file) or with a plain torch.save(state_dict)",
                        self.what
                    );
                }
            }
        }
    }

    /// `BINPERSID`: `('storage', torch.XStorage, key, location, numel)` in
    /// zip files and TorchScript archives; legacy files add a sixth item,
    /// `None` or the view `(view_key, offset, numel)` of the root storage
    /// `key` (offset and numel in elements).
    fn persistent_load(&self, pid: &Value) -> Result<Value> {
        let Value::Tuple(t) = pid else {
            return Err(self.corrupt(&format!("persistent id is a {}", pid.kind())));
        };
        match t.first() {
            Some(Value::Str(tag)) if &**tag == "storage" => {}
            Some(Value::Str(tag)) if &**tag == "module" => bail!(
                "{} holds a whole pickled nn.Module (torch.save(model)), whose classes \
                 headstart will not import: save model.state_dict() instead",
                self.what
            ),
            Some(Value::Str(tag)) => {
                return Err(self.corrupt(&format!("persistent id of kind `{tag}`")));
            }
            _ => return Err(self.corrupt("persistent id without a kind")),
        }
        let (Some(Value::Global(class)), Some(key), Some(numel)) = (t.get(1), t.get(2), t.get(4))
        else {
            return Err(
                self.corrupt("persistent id is not ('storage', type, key, location, numel)")
            );
        };
        let dtype = storage_dtype(&class.1).ok_or_else(|| {
            anyhow::anyhow!(
                "{} stores a tensor as {}.{}, which headstart cannot read (it reads float, \
                 half, bfloat16, double and integer/bool storages): convert the checkpoint to \
                 safetensors",
                self.what,
                class.0,
                class.1
            )
        })?;
        let key = match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => return Err(self.corrupt(&format!("storage key is a {}", other.kind()))),
        };
        let as_count = |v: &Value| match v {
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        };
        let numel = as_count(numel)
            .ok_or_else(|| self.corrupt("storage size is not a non-negative int"))?;
        let view_offset = match t.get(5) {
            None | Some(Value::None) => 0,
            Some(Value::Tuple(view)) => {
                let (Some(offset), Some(view_numel)) = (
                    view.get(1).and_then(as_count),
                    view.get(2).and_then(as_count),
                ) else {
                    return Err(self.corrupt("storage view is not (key, offset, numel)"));
                };
                if offset.checked_add(view_numel).is_none_or(|end| end > numel) {
                    return Err(self.corrupt(&format!(
                        "storage view [{offset}, +{view_numel}) lies outside its storage of \
                         {numel} elements"
                    )));
                }
                offset
            }
            Some(other) => {
                return Err(self.corrupt(&format!("storage view is a {}", other.kind())));
            }
        };
        Ok(Value::Storage(Rc::new(Storage {
            dtype,
            key,
            numel,
            view_offset,
        })))
    }

    /// `REDUCE` and `NEWOBJ`: the few callables a state_dict uses are
    /// interpreted; a tensor rebuilder we do not know is an error (its
    /// tensor would silently go missing); anything else becomes an inert
    /// [`Object`].
    fn call(&mut self, func: &Value, args: &Value) -> Result<Value> {
        let Value::Global(g) = func else {
            return Err(self.corrupt(&format!("REDUCE on a {}", func.kind())));
        };
        let args: &[Value] = match args {
            Value::Tuple(t) => t,
            other => return Err(self.corrupt(&format!("REDUCE with {} arguments", other.kind()))),
        };
        match (g.0.as_str(), g.1.as_str()) {
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
                let d = Value::new_dict();
                if let (Some(Value::List(items)), Value::Dict(dd)) = (args.first(), &d) {
                    for item in items.borrow().iter() {
                        // (key, value) pairs; Python 2 pickles [key, value] lists
                        let pair = match item {
                            Value::Tuple(kv) => kv.to_vec(),
                            Value::List(kv) => kv.borrow().clone(),
                            _ => continue,
                        };
                        if let [k, v] = &pair[..] {
                            dd.borrow_mut().push((k.clone(), v.clone()));
                        }
                    }
                }
                Ok(d)
            }
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
                self.rebuild_tensor(args)
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
            | ("torch.nn.parameter", "Parameter") => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(self.corrupt("parameter without a tensor")),
            },
            ("torch._tensor", "_rebuild_from_type_v2") => match args {
                [f, _new_type, Value::Tuple(_) | Value::List(_), ..] => {
                    let inner = match &args[2] {
                        Value::List(l) => Value::Tuple(Rc::from(l.borrow().clone())),
                        other => other.clone(),
                    };
                    self.call(f, &inner)
                }
                _ => Err(self.corrupt("_rebuild_from_type_v2 with unexpected arguments")),
            },
            ("torch", "Size") => Ok(args.first().cloned().unwrap_or(Value::None)),
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                match args.first() {
                    Some(Value::Global(c)) if c.0 == "numpy" && c.1 == "ndarray" => {
                        Ok(Value::NdArray(Rc::new(RefCell::new(None))))
                    }
                    _ => Err(self.corrupt("_reconstruct of something other than numpy.ndarray")),
                }
            }
            ("numpy", "dtype") => match args.first() {
                Some(Value::Str(descr)) => {
                    Ok(Value::NpDtype(Rc::new(RefCell::new(NpDtype::new(descr)))))
                }
                _ => Err(self.corrupt("numpy.dtype without a type string")),
            },
            (m @ ("torch._utils" | "torch._tensor"), n) if n.starts_with("_rebuild") => bail!(
                "{} builds a tensor with {m}.{n} (a quantized, sparse or otherwise special \
                 tensor), which headstart does not read: convert it to a plain dense tensor \
                 and save it as safetensors",
                self.what
            ),
            (m, n) => {
                let class = format!("{m}.{n}");
                self.unknown.insert(class.clone());
                Ok(Value::Object(Rc::new(Object {
                    class,
                    state: RefCell::new(None),
                })))
            }
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value> {
        let [storage, offset, size, stride, ..] = args else {
            return Err(self.corrupt("_rebuild_tensor_v2 with fewer than 4 arguments"));
        };
        let Value::Storage(storage) = storage else {
            return Err(self.corrupt(&format!("tensor built on a {}", storage.kind())));
        };
        let as_usize = |v: &Value| match v {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        };
        let dims = |v: &Value| -> Option<Vec<usize>> {
            match v {
                Value::Tuple(t) => t.iter().map(as_usize).collect(),
                Value::List(l) => l.borrow().iter().map(as_usize).collect(),
                _ => None,
            }
        };
        let offset = as_usize(offset)
            .and_then(|o| o.checked_add(storage.view_offset))
            .ok_or_else(|| self.corrupt("tensor offset is not an int"))?;
        let size = dims(size).ok_or_else(|| self.corrupt("tensor size is not a tuple of ints"))?;
        let stride =
            dims(stride).ok_or_else(|| self.corrupt("tensor stride is not a tuple of ints"))?;
        if size.len() != stride.len() {
            return Err(self.corrupt("tensor size and stride differ in length"));
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: storage.clone(),
            offset,
            size,
            stride,
        })))
    }
}
