//! Reading `pytorch_model.bin` (the zip format of `torch.save`, torch >= 1.6).
//!
//! The archive holds `<prefix>/data.pkl`, a pickle of the state_dict in
//! which every tensor is `torch._utils._rebuild_tensor_v2(storage, offset,
//! size, stride, ...)` and every storage is a persistent id `('storage',
//! torch.FloatStorage, key, location, numel)` whose bytes are the archive
//! member `<prefix>/data/<key>` (little-endian unless `<prefix>/byteorder`
//! says `big`).
//!
//! The pickle is run by a small VM that knows only the opcodes and globals a
//! state_dict uses. It never imports or calls anything: unknown globals
//! become inert placeholders, so a malicious pickle cannot run code.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result, bail};

use super::safetensors_io::{LFS_POINTER, lfs_pointer_error};
use super::tensor::{DType, HostTensor};

/// A storage: `numel` elements of `dtype` in archive member `data/<key>`.
#[derive(Debug)]
struct Storage {
    dtype: DType,
    key: String,
    numel: usize,
}

/// A strided view of a storage, as `_rebuild_tensor_v2` describes it
/// (offset and strides in elements).
#[derive(Debug)]
struct TensorRef {
    storage: Rc<Storage>,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// An instance of a class the VM does not know; kept inert.
#[derive(Debug)]
struct Object {
    class: String,
}

/// A pickle value. Lists and dicts are shared and mutable (the memo holds
/// them before they are filled).
#[derive(Clone, Debug)]
enum Value {
    None,
    /// The value itself is never needed (e.g. `requires_grad`).
    Bool,
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    /// Contents skipped: state_dicts keep their bytes in storages.
    Bytes,
    Tuple(Rc<[Value]>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Rc<(String, String)>),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
    Object(Rc<Object>),
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
            Value::Object(o) => format!("{} object", o.class),
        }
    }

    /// Short description for messages: scalars by value, the rest by kind.
    fn describe(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) if s.len() <= 40 => format!("{s:?}"),
            other => other.kind(),
        }
    }

    fn new_dict() -> Value {
        Value::Dict(Rc::new(RefCell::new(Vec::new())))
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
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8], what: &'a str) -> Self {
        Unpickler {
            data,
            pos: 0,
            what,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
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
    fn run(mut self) -> Result<Value> {
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
                0x88 | 0x89 => self.stack.push(Value::Bool),
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
                b'C' | b'B' | 0x8e => {
                    // SHORT_BINBYTES, BINBYTES, BINBYTES8
                    let n = match op {
                        b'C' => self.arr::<1>()?[0] as usize,
                        b'B' => u32::from_le_bytes(self.arr()?) as usize,
                        _ => self.len_u64()?,
                    };
                    self.take(n)?;
                    self.stack.push(Value::Bytes);
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
                    if n > 8 {
                        return Err(self.corrupt(&format!("{n}-byte integer (more than 64 bits)")));
                    }
                    let b = self.take(n)?;
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
                    // BUILD: the state of an OrderedDict (`_metadata`) or an
                    // unknown object carries nothing we need.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
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

    /// `BINPERSID`: `('storage', torch.XStorage, key, location, numel)`.
    fn persistent_load(&self, pid: &Value) -> Result<Value> {
        let Value::Tuple(t) = pid else {
            return Err(self.corrupt(&format!("persistent id is a {}", pid.kind())));
        };
        let (Some(Value::Str(tag)), Some(Value::Global(class)), Some(key), Some(numel)) =
            (t.first(), t.get(1), t.get(2), t.get(4))
        else {
            return Err(
                self.corrupt("persistent id is not ('storage', type, key, location, numel)")
            );
        };
        if &**tag != "storage" {
            return Err(self.corrupt(&format!("persistent id of kind `{tag}`")));
        }
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
        let numel = match numel {
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        }
        .ok_or_else(|| self.corrupt("storage size is not a non-negative int"))?;
        Ok(Value::Storage(Rc::new(Storage { dtype, key, numel })))
    }

    /// `REDUCE`: the few callables a state_dict uses; anything else becomes
    /// an inert [`Object`].
    fn call(&self, func: &Value, args: &Value) -> Result<Value> {
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
                        if let Value::Tuple(kv) = item
                            && let [k, v] = &kv[..]
                        {
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
            (m, n) => Ok(Value::Object(Rc::new(Object {
                class: format!("{m}.{n}"),
            }))),
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
        let offset = as_usize(offset).ok_or_else(|| self.corrupt("tensor offset is not an int"))?;
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

/// Index one past the last storage element a view touches (0 when it has
/// no elements), or `None` on overflow.
fn view_end(t: &TensorRef) -> Option<usize> {
    if t.size.contains(&0) {
        return Some(0);
    }
    let mut last = t.offset;
    for (&n, &s) in t.size.iter().zip(&t.stride) {
        last = last.checked_add((n - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)
}

/// Copies a strided view of `src` into a contiguous row-major vector.
/// The caller has checked `view_end(t) <= src.len()`.
fn gather(src: &[f32], t: &TensorRef) -> Vec<f32> {
    let numel: usize = t.size.iter().product();
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return out;
    }
    let nd = t.size.len();
    if nd == 0 {
        out.push(src[t.offset]);
        return out;
    }
    let (inner, inner_stride) = (t.size[nd - 1], t.stride[nd - 1]);
    let mut idx = vec![0usize; nd - 1];
    loop {
        let base = t.offset
            + idx
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        if inner_stride == 1 {
            out.extend_from_slice(&src[base..base + inner]);
        } else {
            out.extend((0..inner).map(|j| src[base + j * inner_stride]));
        }
        // advance the odometer over the outer dimensions
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The `(name, tensor)` entries of an unpickled state_dict. Accepts the
/// state_dict itself, or a dict wrapping it under `state_dict`/`model`.
fn state_dict_entries(top: &Value, what: &str) -> Result<Vec<(String, Rc<TensorRef>)>> {
    let Value::Dict(d) = top else {
        bail!(
            "{what} holds a value of type {}, not a state_dict: save the weights with \
             torch.save(model.state_dict(), path)",
            top.kind()
        );
    };
    let d = d.borrow();
    let tensors: Vec<(String, Rc<TensorRef>)> = d
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.to_string(), t.clone())),
            _ => None,
        })
        .collect();
    if !tensors.is_empty() {
        return Ok(tensors);
    }
    for wrapper in ["state_dict", "model", "module"] {
        if let Some((_, inner @ Value::Dict(_))) = d
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == wrapper))
        {
            return state_dict_entries(inner, what);
        }
    }
    let keys: Vec<String> = d
        .iter()
        .take(8)
        .map(|(k, v)| match k {
            Value::Str(s) => format!("{s}: {}", v.describe()),
            other => other.kind(),
        })
        .collect();
    bail!(
        "{what} holds a dict without tensors ({}): save the weights with \
         torch.save(model.state_dict(), path)",
        keys.join(", ")
    )
}

/// Reads a `pytorch_model.bin` written by `torch.save` (zip format,
/// torch >= 1.6) into `f32` tensors, honouring storage offsets and strides
/// (views such as a transposed weight come out contiguous, row-major).
///
/// Legacy (non-zip) files, Git LFS pointers and other formats are errors
/// saying what to do.
pub fn read_pytorch_bin(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; 32];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read(&mut head[got..])
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &head[..got];
    if head.starts_with(LFS_POINTER) {
        return Err(lfs_pointer_error(path));
    }
    if !head.starts_with(b"PK\x03\x04") {
        if head.first() == Some(&0x80) {
            bail!(
                "{}: legacy PyTorch format (torch < 1.6) is not supported yet: re-save it with \
                 torch.save(..., _use_new_zipfile_serialization=True)",
                path.display()
            );
        }
        bail!(
            "{} is not a PyTorch checkpoint (expected a zip archive written by torch.save): \
             re-download it",
            path.display()
        );
    }
    let archive_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).with_context(|| {
        format!(
            "{} is truncated or corrupt (bad zip archive): re-download it",
            path.display()
        )
    })?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .min_by_key(|n| n.len())
        .cloned()
        .with_context(|| {
            format!(
                "{} has no <name>/data.pkl: it is a zip archive but not one written by torch.save",
                path.display()
            )
        })?;
    let prefix = pkl.trim_end_matches("data.pkl").to_owned();

    let mut read_member = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).with_context(|| {
            format!(
                "{} lacks archive member {name}: the file is truncated or corrupt, re-download it",
                path.display()
            )
        })?;
        let cap = f.size().min(archive_len);
        let mut buf = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
        f.read_to_end(&mut buf).with_context(|| {
            format!(
                "cannot read member {name} of {}: the file is corrupt, re-download it",
                path.display()
            )
        })?;
        Ok(buf)
    };

    let byteorder = format!("{prefix}byteorder");
    let big_endian = if names.contains(&byteorder) {
        let b = read_member(&byteorder)?;
        match b.trim_ascii() {
            b"little" => false,
            b"big" => true,
            other => bail!(
                "{} has byteorder {:?}; expected little or big",
                path.display(),
                String::from_utf8_lossy(other)
            ),
        }
    } else {
        false
    };

    let pickle = read_member(&pkl)?;
    let what = format!("{} ({pkl})", path.display());
    let top = Unpickler::new(&pickle, &what).run()?;
    let entries = state_dict_entries(&top, &what)?;

    // Decode each storage once; drop it after its last tensor.
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (_, t) in &entries {
        *uses.entry(t.storage.key.clone()).or_default() += 1;
    }
    let mut cache: HashMap<String, Rc<Vec<f32>>> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in entries {
        let st = &t.storage;
        let values = match cache.get(&st.key) {
            Some(v) => v.clone(),
            None => {
                let member = format!("{prefix}data/{}", st.key);
                let bytes = read_member(&member)?;
                let want = st.numel.checked_mul(st.dtype.size());
                if want.is_none_or(|w| bytes.len() < w) {
                    bail!(
                        "{}: storage {member} has {} bytes but tensor `{name}` needs {} {} \
                         elements: the file is truncated or corrupt, re-download it",
                        path.display(),
                        bytes.len(),
                        st.numel,
                        st.dtype
                    );
                }
                let usable = want.unwrap_or(0);
                let v = Rc::new(
                    st.dtype
                        .decode(&bytes[..usable], big_endian)
                        .with_context(|| format!("{}: storage {member}", path.display()))?,
                );
                cache.insert(st.key.clone(), v.clone());
                v
            }
        };
        let end = view_end(&t);
        if end.is_none_or(|e| e > values.len()) {
            bail!(
                "{}: tensor `{name}` (size {:?}, stride {:?}, offset {}) reaches past the end of \
                 its storage data/{} ({} elements): the file is corrupt, re-download it",
                path.display(),
                t.size,
                t.stride,
                t.offset,
                st.key,
                values.len()
            );
        }
        let data = gather(&values, &t);
        if let Some(n) = uses.get_mut(&st.key) {
            *n -= 1;
            if *n == 0 {
                cache.remove(&st.key);
            }
        }
        out.insert(
            name,
            HostTensor {
                shape: t.size.clone(),
                dtype: st.dtype,
                data,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds pickles opcode by opcode, the way torch.save (protocol 2) does.
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn op(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
        fn s(&mut self, s: &str) -> &mut Self {
            self.0.push(b'X');
            self.0.extend((s.len() as u32).to_le_bytes());
            self.0.extend(s.as_bytes());
            self
        }
        fn global(&mut self, m: &str, n: &str) -> &mut Self {
            self.0.push(b'c');
            self.0.extend(format!("{m}\n{n}\n").as_bytes());
            self
        }
        fn int(&mut self, i: u8) -> &mut Self {
            self.op(&[b'K', i])
        }
        fn tuple_of(&mut self, xs: &[u8]) -> &mut Self {
            self.op(b"(");
            for &x in xs {
                self.int(x);
            }
            self.op(b"t")
        }
        /// `_rebuild_tensor_v2(('storage', torch.<ty>, key, 'cpu', numel), off, size, stride, False, OrderedDict())`
        fn tensor(
            &mut self,
            ty: &str,
            key: &str,
            numel: u8,
            off: u8,
            size: &[u8],
            stride: &[u8],
        ) -> &mut Self {
            self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
            self.op(b"(")
                .s("storage")
                .global("torch", ty)
                .s(key)
                .s("cpu")
                .int(numel)
                .op(b"tQ");
            self.int(off).tuple_of(size).tuple_of(stride).op(&[0x89]);
            self.global("collections", "OrderedDict").op(b")R");
            self.op(b"tR")
        }
    }

    fn zip_file(dir: &Path, members: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
        let path = dir.join("pytorch_model.bin");
        let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in members {
            z.start_file(*name, opts).unwrap();
            z.write_all(bytes).unwrap();
        }
        z.finish().unwrap();
        path
    }

    fn le<T: Copy, const N: usize>(xs: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        xs.iter().flat_map(|&x| f(x)).collect()
    }

    /// A state_dict like torch.save writes: OrderedDict, memoised globals,
    /// a parameter, a half tensor, an int64 buffer and a transposed view
    /// sharing the first storage at an offset.
    fn sample_pickle() -> Vec<u8> {
        let mut p = P::default();
        p.op(&[0x80, 2])
            .global("collections", "OrderedDict")
            .op(b"q\x00)Rq\x01(");
        p.s("a.weight")
            .global("torch._utils", "_rebuild_parameter")
            .op(b"(");
        p.tensor("FloatStorage", "0", 8, 0, &[2, 3], &[3, 1]);
        p.op(&[0x88])
            .global("collections", "OrderedDict")
            .op(b")RtR");
        p.s("b.bias").tensor("HalfStorage", "1", 2, 0, &[2], &[1]);
        p.s("c").tensor("LongStorage", "2", 3, 0, &[3], &[1]);
        // (3, 2) transposed view of storage 0 starting at element 1
        p.s("t").tensor("FloatStorage", "0", 8, 1, &[3, 2], &[1, 3]);
        p.s("scalar").tensor("FloatStorage", "0", 8, 7, &[], &[]);
        p.op(b"u");
        // BUILD with the OrderedDict's _metadata, via BINGET of a memoised global
        p.op(b"}").s("_metadata").op(b"h\x00)R").op(b"sb.");
        p.0
    }

    #[test]
    fn reads_hand_built_state_dict() {
        let dir = tempfile::tempdir().unwrap();
        let storage0 = le(&[0f32, 1., 2., 3., 4., 5., 6., 7.], f32::to_le_bytes);
        let storage1 = le(
            &[half::f16::from_f32(1.5), half::f16::from_f32(-2.0)],
            half::f16::to_le_bytes,
        );
        let storage2 = le(&[0i64, 1, 2], i64::to_le_bytes);
        let path = zip_file(
            dir.path(),
            &[
                ("archive/data.pkl", sample_pickle()),
                ("archive/byteorder", b"little".to_vec()),
                ("archive/data/0", storage0),
                ("archive/data/1", storage1),
                ("archive/data/2", storage2),
                ("archive/version", b"3\n".to_vec()),
            ],
        );
        let t = read_pytorch_bin(&path).unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t["a.weight"].shape, vec![2, 3]);
        assert_eq!(t["a.weight"].dtype, DType::F32);
        assert_eq!(t["a.weight"].data, vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(t["b.bias"].dtype, DType::F16);
        assert_eq!(t["b.bias"].data, vec![1.5, -2.0]);
        assert_eq!(t["c"].dtype, DType::I64);
        assert_eq!(t["c"].data, vec![0., 1., 2.]);
        // t[i][j] = storage[1 + i + 3j]
        assert_eq!(t["t"].shape, vec![3, 2]);
        assert_eq!(t["t"].data, vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(t["scalar"].shape, Vec::<usize>::new());
        assert_eq!(t["scalar"].data, vec![7.]);
    }

    #[test]
    fn big_endian_storages_are_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = P::default();
        p.op(&[0x80, 2, b'}', b'('])
            .s("w")
            .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
            .op(b"u.");
        let path = zip_file(
            dir.path(),
            &[
                ("m/data.pkl", p.0),
                ("m/byteorder", b"big".to_vec()),
                ("m/data/0", le(&[0.5f32, -8.0], f32::to_be_bytes)),
            ],
        );
        assert_eq!(read_pytorch_bin(&path).unwrap()["w"].data, vec![0.5, -8.0]);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let storage0 = le(&[0f32; 8], f32::to_le_bytes);

        // an opcode the VM does not know (INST, 'i')
        let mut p = P::default();
        p.op(&[0x80, 2]).op(b"i");
        let path = zip_file(dir.path(), &[("a/data.pkl", p.0)]);
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(
            err.contains("opcode 0x69 ('i')") && err.contains("pytorch_model.bin"),
            "{err}"
        );

        // the pickle stops half way
        let mut pk = sample_pickle();
        pk.truncate(pk.len() / 2);
        let path = zip_file(dir.path(), &[("a/data.pkl", pk)]);
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("a/data.pkl"),
            "{err}"
        );

        // a view past the end of its storage
        let mut p = P::default();
        p.op(&[0x80, 2, b'}', b'('])
            .s("w")
            .tensor("FloatStorage", "0", 8, 4, &[2, 3], &[3, 1])
            .op(b"u.");
        let path = zip_file(
            dir.path(),
            &[("a/data.pkl", p.0), ("a/data/0", storage0.clone())],
        );
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(err.contains("`w`") && err.contains("past the end"), "{err}");

        // a storage member that is missing or short
        let path = zip_file(
            dir.path(),
            &[
                ("a/data.pkl", sample_pickle()),
                ("a/data/0", storage0[..8].to_vec()),
            ],
        );
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(
            err.contains("a/data/0") && err.contains("truncated or corrupt"),
            "{err}"
        );
        let path = zip_file(dir.path(), &[("a/data.pkl", sample_pickle())]);
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(err.contains("lacks archive member a/data/0"), "{err}");

        // an unsupported storage type
        let mut p = P::default();
        p.op(&[0x80, 2, b'}', b'('])
            .s("w")
            .tensor("ComplexFloatStorage", "0", 1, 0, &[1], &[1])
            .op(b"u.");
        let path = zip_file(dir.path(), &[("a/data.pkl", p.0)]);
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(err.contains("torch.ComplexFloatStorage"), "{err}");

        // not a state_dict
        let path = zip_file(dir.path(), &[("a/data.pkl", vec![0x80, 2, b'K', 3, b'.'])]);
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(
            err.contains("holds a value of type int, not a state_dict"),
            "{err}"
        );

        // a dict without tensors lists what it holds
        let mut p = P::default();
        p.op(&[0x80, 2, b'}', b'('])
            .s("epoch")
            .int(3)
            .s("lr")
            .op(b"G")
            .op(&0.25f64.to_be_bytes());
        p.op(b"u.");
        let path = zip_file(dir.path(), &[("a/data.pkl", p.0)]);
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(
            err.contains("dict without tensors (epoch: 3, lr: 0.25)"),
            "{err}"
        );

        // a zip without data.pkl, a legacy pickle, garbage, an LFS pointer
        let path = zip_file(dir.path(), &[("readme.txt", b"hi".to_vec())]);
        assert!(
            read_pytorch_bin(&path)
                .unwrap_err()
                .to_string()
                .contains("no <name>/data.pkl")
        );
        std::fs::write(&path, [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc]).unwrap();
        let err = read_pytorch_bin(&path).unwrap_err().to_string();
        assert!(
            err.contains("legacy PyTorch format (torch < 1.6) is not supported yet"),
            "{err}"
        );
        assert!(err.contains("_use_new_zipfile_serialization=True"), "{err}");
        std::fs::write(&path, b"<html>").unwrap();
        assert!(
            read_pytorch_bin(&path)
                .unwrap_err()
                .to_string()
                .contains("not a PyTorch checkpoint")
        );
        std::fs::write(&path, b"version https://git-lfs.github.com/spec/v1\n").unwrap();
        assert!(
            read_pytorch_bin(&path)
                .unwrap_err()
                .to_string()
                .contains("Git LFS pointer")
        );
        // a zip cut short
        let good = zip_file(
            dir.path(),
            &[("a/data.pkl", sample_pickle()), ("a/data/0", storage0)],
        );
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&good, &bytes[..bytes.len() - 30]).unwrap();
        let err = read_pytorch_bin(&good).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn vm_handles_memo_longs_and_wrappers() {
        let mut p = P::default();
        // {"state_dict": {"w": tensor}, "epoch": LONG1(-2), "lr": 0.5}
        p.op(&[0x80, 2, b'}', 0x94, b'(']);
        p.op(&[0x8c, 5]).op(b"epoch").op(&[0x8a, 1, 0xFE]);
        p.s("lr").op(b"G").op(&0.5f64.to_be_bytes());
        p.s("state_dict").op(b"}").op(&[b'r', 9, 0, 0, 0]).s("w");
        p.tensor("IntStorage", "k", 2, 0, &[2], &[1]).op(b"s");
        p.op(b"u.");
        let top = Unpickler::new(&p.0, "test").run().unwrap();
        let Value::Dict(d) = &top else {
            panic!("not a dict")
        };
        assert_eq!(d.borrow()[0].1.describe(), "-2");
        assert_eq!(d.borrow()[1].1.describe(), "0.5");
        let entries = state_dict_entries(&top, "test").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "w");
        assert_eq!(entries[0].1.storage.dtype, DType::I32);
    }
}
