//! The weights of a TorchScript archive, read from its module tree alone.
//!
//! `data.pkl` of a `torch.jit.save` archive pickles the top module as an
//! object of a `__torch__.*` class (`NEWOBJ`) whose `BUILD` state is a dict
//! of its attributes: tensors (its parameters and buffers), child modules
//! (more `__torch__.*` objects) and settings (`training`, ints, int lists).
//! Walking that tree gives what `module.state_dict()` would: every tensor
//! under its dotted attribute path, e.g. `net.layers.conv.weight`. The
//! TorchScript code in `code/` is never looked at, let alone run.

use std::collections::HashSet;
use std::rc::Rc;

use anyhow::{Result, bail};

use super::vm::{Object, TensorRef, Value};

/// Module trees deeper than this are refused (a corrupt or hostile file).
const MAX_DEPTH: usize = 256;

/// The `(dotted path, tensor)` of every tensor attribute in the module tree
/// whose root is `top`, in attribute order. Non-tensor attributes are
/// skipped; no tensor at all is an error.
pub(super) fn module_tensors(top: &Value, what: &str) -> Result<Vec<(String, Rc<TensorRef>)>> {
    let Value::Object(root) = top else {
        bail!("{what} does not hold a TorchScript module");
    };
    let mut out = Vec::new();
    let mut on_path = HashSet::new();
    walk(root, "", 0, &mut on_path, &mut out, what)?;
    if out.is_empty() {
        bail!(
            "{what} is a TorchScript module ({}) without parameters or buffers: there are no \
             weights to load",
            root.class.trim_start_matches("__torch__.")
        );
    }
    Ok(out)
}

fn walk(
    module: &Rc<Object>,
    prefix: &str,
    depth: usize,
    on_path: &mut HashSet<*const Object>,
    out: &mut Vec<(String, Rc<TensorRef>)>,
    what: &str,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{what}: the module tree is more than {MAX_DEPTH} levels deep; the file is corrupt");
    }
    if !on_path.insert(Rc::as_ptr(module)) {
        bail!("{what}: module `{prefix}` contains itself; the file is corrupt");
    }
    let state = module.state.borrow();
    if let Some(Value::Dict(attrs)) = &*state {
        for (key, value) in attrs.borrow().iter() {
            let Value::Str(key) = key else { continue };
            let path = format!("{prefix}{key}");
            match value {
                Value::Tensor(t) => out.push((path, t.clone())),
                Value::Object(child) if child.class.starts_with("__torch__.") => {
                    walk(child, &format!("{path}."), depth + 1, on_path, out, what)?;
                }
                _ => {}
            }
        }
    }
    on_path.remove(&Rc::as_ptr(module));
    Ok(())
}
