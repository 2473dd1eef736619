//! A model's interface (input and output names, types, shapes) as tract sees it; the check that a model
//! file presents the interface its signed manifest promises; and [`Serving`], the one rule for which
//! interfaces a device serves. The agent applies it when it loads a model and `outpost bundle create`
//! before it signs one, so release tooling refuses exactly what devices could not serve.

use crate::ModelError;
use crate::tensor::{dtype_of, element_count};
use outpost_protocol::manifest::{Dim, ModelInterface, TensorSpec};
use tract_nnef::prelude::*;

/// Names, types and shapes (symbolic dimensions by name) of a model's inputs and outputs.
pub fn read(typed: &TypedModel) -> Result<ModelInterface, ModelError> {
    let load = |e: TractError| ModelError::Load(format!("{e:#}"));
    let spec = |outlet: &OutletId| -> Result<TensorSpec, ModelError> {
        let fact = typed.outlet_fact(*outlet).map_err(load)?;
        let name = outlet_name(typed, *outlet);
        let dtype = dtype_of(fact.datum_type).map_err(|t| {
            ModelError::Unsupported(format!(
                "tensor {name} is {t}; devices serve BOOL, UINT8/16/32/64, INT8/16/32/64 and FP16/32/64 tensors"
            ))
        })?;
        let shape = fact
            .shape
            .iter()
            .map(|d| match d.to_i64() {
                Ok(n) => u64::try_from(n)
                    .map(Dim::Fixed)
                    .map_err(|_| ModelError::Unsupported(format!("tensor {name} has dimension {n}"))),
                Err(_) => Ok(Dim::Symbolic(d.to_string())),
            })
            .collect::<Result<_, _>>()?;
        Ok(TensorSpec { name, dtype, shape })
    };
    Ok(ModelInterface {
        inputs: typed.input_outlets().map_err(load)?.iter().map(spec).collect::<Result<_, _>>()?,
        outputs: typed.output_outlets().map_err(load)?.iter().map(spec).collect::<Result<_, _>>()?,
    })
}

fn outlet_name(typed: &TypedModel, outlet: OutletId) -> String {
    typed.outlet_label(outlet).unwrap_or(&typed.node(outlet.node).name).to_owned()
}

/// Checks that the model file presents the interface its signed manifest promises: the same names in the
/// same order, the same types, the same ranks and fixed dimensions (a symbolic dimension matches any
/// symbol: NNEF may rename it).
pub fn check(typed: &TypedModel, promised: &ModelInterface) -> Result<(), ModelError> {
    let actual = read(typed)?;
    let compare = |kind: &str, got: &[TensorSpec], want: &[TensorSpec]| -> Result<(), ModelError> {
        if got.len() != want.len() {
            return Err(ModelError::InterfaceMismatch(format!(
                "{} {kind}s in the model, {} in the manifest",
                got.len(),
                want.len()
            )));
        }
        for (g, w) in got.iter().zip(want) {
            if g.name != w.name {
                return Err(ModelError::InterfaceMismatch(format!("{kind} {:?}, manifest says {:?}", g.name, w.name)));
            }
            if g.dtype != w.dtype {
                return Err(ModelError::InterfaceMismatch(format!(
                    "{kind} {} is {}, manifest says {}",
                    g.name, g.dtype, w.dtype
                )));
            }
            let same_dims = g.shape.len() == w.shape.len()
                && g.shape.iter().zip(&w.shape).all(|(a, b)| match (a, b) {
                    (Dim::Fixed(n), Dim::Fixed(m)) => n == m,
                    (Dim::Symbolic(_), Dim::Symbolic(_)) => true,
                    _ => false,
                });
            if !same_dims {
                return Err(ModelError::InterfaceMismatch(format!(
                    "{kind} {} has shape {:?}, manifest says {:?}",
                    g.name, g.shape, w.shape
                )));
            }
        }
        Ok(())
    };
    compare("input", &actual.inputs, &promised.inputs)?;
    compare("output", &actual.outputs, &promised.outputs)
}

/// How a device serves an interface: whether dimension 0 of every input and output is a (symbolic) batch,
/// and each input's shape without it. Requests then carry any number of rows of these shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub batchable: bool,
    /// Per input, in interface order: the shape of one row (the whole shape for a fixed-batch model).
    pub row_shapes: Vec<Vec<usize>>,
    /// Per input: elements in one row.
    pub row_lens: Vec<usize>,
}

impl Serving {
    /// The serving shape of `iface`, or why a device cannot serve it: a symbolic dimension other than a
    /// leading batch (the agent compiles concrete plans: DESIGN.md measured symbolic ones up to 10× slower),
    /// or a row too large to address.
    pub fn of(iface: &ModelInterface) -> Result<Serving, ModelError> {
        let batchable =
            iface.inputs.iter().chain(&iface.outputs).all(|t| matches!(t.shape.first(), Some(Dim::Symbolic(_))));
        let mut row_shapes = Vec::with_capacity(iface.inputs.len());
        let mut row_lens = Vec::with_capacity(iface.inputs.len());
        for t in &iface.inputs {
            let dims = t.shape.iter().skip(usize::from(batchable));
            let row: Vec<usize> = dims
                .map(|d| match d {
                    Dim::Fixed(n) => usize::try_from(*n)
                        .map_err(|_| ModelError::Unsupported(format!("input {} has dimension {n}", t.name))),
                    Dim::Symbolic(s) if batchable => Err(ModelError::Unsupported(format!(
                        "input {} has symbolic dimension {s} beyond the batch; export it with concrete shapes",
                        t.name
                    ))),
                    Dim::Symbolic(s) => Err(ModelError::Unsupported(format!(
                        "input {} has symbolic dimension {s}, but not every input and output starts with a \
                         batch dimension; export it with concrete shapes",
                        t.name
                    ))),
                })
                .collect::<Result<_, _>>()?;
            let len = element_count(&row)
                .ok_or_else(|| ModelError::Unsupported(format!("input {} has {row:?} elements per row", t.name)))?;
            row_shapes.push(row);
            row_lens.push(len);
        }
        Ok(Serving { batchable, row_shapes, row_lens })
    }
}

/// The concrete shape of `spec` with every symbolic dimension (the batch) set to 1.
pub fn unit_shape(spec: &TensorSpec) -> Vec<usize> {
    spec.shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n as usize,
            Dim::Symbolic(_) => 1,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::manifest::DType;

    fn spec(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec { name: name.into(), dtype, shape }
    }

    #[test]
    fn a_leading_symbol_on_every_tensor_is_the_batch() {
        let n = || Dim::Symbolic("N".into());
        let iface = ModelInterface {
            inputs: vec![
                spec("ids", DType::I64, vec![n(), Dim::Fixed(16)]),
                spec("mask", DType::Bool, vec![n(), Dim::Fixed(16)]),
            ],
            outputs: vec![spec("class", DType::I64, vec![n()])],
        };
        let s = Serving::of(&iface).unwrap();
        assert!(s.batchable);
        assert_eq!((s.row_shapes, s.row_lens), (vec![vec![16], vec![16]], vec![16, 16]));
    }

    #[test]
    fn symbols_beyond_the_batch_are_refused_with_the_tensor_named() {
        let iface = ModelInterface {
            inputs: vec![spec("x", DType::F32, vec![Dim::Symbolic("N".into()), Dim::Symbolic("T".into())])],
            outputs: vec![spec("y", DType::F32, vec![Dim::Symbolic("N".into())])],
        };
        let e = Serving::of(&iface).unwrap_err().to_string();
        assert!(e.contains("input x has symbolic dimension T beyond the batch"), "{e}");
        let fixed = ModelInterface {
            inputs: vec![spec("x", DType::F32, vec![Dim::Symbolic("N".into())])],
            outputs: vec![spec("y", DType::F32, vec![Dim::Fixed(3)])],
        };
        let e = Serving::of(&fixed).unwrap_err().to_string();
        assert!(e.contains("not every input and output starts with a batch dimension"), "{e}");
    }

    #[test]
    fn rows_too_large_to_address_are_refused() {
        let huge = ModelInterface {
            inputs: vec![spec("x", DType::U8, vec![Dim::Fixed(1 << 40), Dim::Fixed(1 << 40)])],
            outputs: vec![],
        };
        assert!(Serving::of(&huge).is_err());
    }
}
