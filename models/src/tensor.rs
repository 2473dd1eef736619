//! Typed tensor values: one variant per Open Inference Protocol type that tract runs, each a plain `Vec` of
//! its element type, so a request's values move into a tract tensor without a copy and come back out in the
//! model's own type. Conversions to and from little-endian bytes (the binary tensor extension, self-test
//! vectors in bundles) check lengths and values; nothing here panics on untrusted input.

use outpost_protocol::manifest::{self, DType, Tolerance};
use std::ops::Range;
pub use tract_nnef::prelude::f16;
use tract_nnef::prelude::{DatumType, IntoTensor, Tensor, tract_ndarray};

/// A tensor's values, row-major, in its own element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// An empty FP32 tensor (what `std::mem::take` leaves behind when a request's values move on to a run).
impl Default for TensorData {
    fn default() -> TensorData {
        TensorData::F32(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("{bytes} bytes is not a whole number of {dtype} values ({} bytes each)", dtype.size())]
    Length { dtype: DType, bytes: usize },
    #[error("BOOL value {index} is the byte {value}; booleans are 0 or 1")]
    Bool { index: usize, value: u8 },
    #[error("{got} values where {want} were expected")]
    DType { want: DType, got: DType },
    #[error("{0}")]
    Shape(String),
    #[error("tensor type {0} is not one the Open Inference Protocol serves")]
    Unsupported(String),
}

/// Applies `$body` to the inner `Vec` of whichever variant `$value` is.
macro_rules! each {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
        }
    };
}

/// Builds the variant for `$dtype` from `$body`, in which `$t` names the element type.
macro_rules! for_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::Bool => TensorData::Bool({
                type $t = bool;
                $body
            }),
            DType::U8 => TensorData::U8({
                type $t = u8;
                $body
            }),
            DType::U16 => TensorData::U16({
                type $t = u16;
                $body
            }),
            DType::U32 => TensorData::U32({
                type $t = u32;
                $body
            }),
            DType::U64 => TensorData::U64({
                type $t = u64;
                $body
            }),
            DType::I8 => TensorData::I8({
                type $t = i8;
                $body
            }),
            DType::I16 => TensorData::I16({
                type $t = i16;
                $body
            }),
            DType::I32 => TensorData::I32({
                type $t = i32;
                $body
            }),
            DType::I64 => TensorData::I64({
                type $t = i64;
                $body
            }),
            DType::F16 => TensorData::F16({
                type $t = f16;
                $body
            }),
            DType::F32 => TensorData::F32({
                type $t = f32;
                $body
            }),
            DType::F64 => TensorData::F64({
                type $t = f64;
                $body
            }),
        }
    };
}

/// An element type: its little-endian encoding and a lossy view as f64 (drift statistics, reports).
pub trait Element: Copy + Default + PartialEq + std::fmt::Debug + tract_nnef::prelude::Datum {
    const SIZE: usize;
    /// `bytes` is exactly `SIZE` long.
    fn from_le(bytes: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    fn to_f64(self) -> f64;
}

macro_rules! numeric {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
numeric!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

impl Element for bool {
    const SIZE: usize = 1;
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
}

impl Element for f16 {
    const SIZE: usize = 2;
    fn from_le(bytes: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
}

fn decode<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::from_le).collect()
}

/// The first `n` elements of a tract tensor of element type `T` (all of them when it has fewer).
fn take<T: Element>(t: &Tensor, n: usize) -> Result<Vec<T>, TensorError> {
    let view = t.to_plain_array_view::<T>().map_err(|e| TensorError::Shape(format!("{e:#}")))?;
    Ok(match view.as_slice() {
        Some(flat) => flat[..n.min(flat.len())].to_vec(),
        None => view.iter().take(n).copied().collect(),
    })
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::Bool(_) => DType::Bool,
            TensorData::U8(_) => DType::U8,
            TensorData::U16(_) => DType::U16,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
            TensorData::I8(_) => DType::I8,
            TensorData::I16(_) => DType::I16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::F16(_) => DType::F16,
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
        }
    }

    /// Elements (not bytes).
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the little-endian encoding.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// An empty tensor of `dtype` with room for `capacity` elements.
    pub fn with_capacity(dtype: DType, capacity: usize) -> TensorData {
        for_dtype!(dtype, T => Vec::<T>::with_capacity(capacity))
    }

    /// `n` zeros (false for BOOL) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        for_dtype!(dtype, T => vec![T::default(); n])
    }

    /// Decodes little-endian values. The length must be a whole number of values and BOOL bytes 0 or 1.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<TensorData, TensorError> {
        if !bytes.len().is_multiple_of(dtype.size()) {
            return Err(TensorError::Length { dtype, bytes: bytes.len() });
        }
        if dtype == DType::Bool
            && let Some(index) = bytes.iter().position(|&b| b > 1)
        {
            return Err(TensorError::Bool { index, value: bytes[index] });
        }
        Ok(for_dtype!(dtype, T => decode::<T>(bytes)))
    }

    /// Appends the little-endian encoding to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.byte_len());
        each!(self, v => v.iter().for_each(|x| x.write_le(out)))
    }

    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_le_bytes(&mut out);
        out
    }

    /// Feeds the little-endian encoding to `sink` a few KB at a time (hashing without a copy of the whole).
    pub fn for_each_le_chunk(&self, mut sink: impl FnMut(&[u8])) {
        const PER: usize = 4096;
        let mut buf = Vec::with_capacity(PER * 8);
        each!(self, v => {
            for chunk in v.chunks(PER) {
                buf.clear();
                chunk.iter().for_each(|x| x.write_le(&mut buf));
                sink(&buf);
            }
        })
    }

    /// A copy of the elements in `range` (element indices); `None` when the range is out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<TensorData> {
        Some(match self {
            TensorData::Bool(v) => TensorData::Bool(v.get(range)?.to_vec()),
            TensorData::U8(v) => TensorData::U8(v.get(range)?.to_vec()),
            TensorData::U16(v) => TensorData::U16(v.get(range)?.to_vec()),
            TensorData::U32(v) => TensorData::U32(v.get(range)?.to_vec()),
            TensorData::U64(v) => TensorData::U64(v.get(range)?.to_vec()),
            TensorData::I8(v) => TensorData::I8(v.get(range)?.to_vec()),
            TensorData::I16(v) => TensorData::I16(v.get(range)?.to_vec()),
            TensorData::I32(v) => TensorData::I32(v.get(range)?.to_vec()),
            TensorData::I64(v) => TensorData::I64(v.get(range)?.to_vec()),
            TensorData::F16(v) => TensorData::F16(v.get(range)?.to_vec()),
            TensorData::F32(v) => TensorData::F32(v.get(range)?.to_vec()),
            TensorData::F64(v) => TensorData::F64(v.get(range)?.to_vec()),
        })
    }

    /// Appends `other`'s elements; both must be of one type.
    pub fn extend_from(&mut self, other: &TensorData) -> Result<(), TensorError> {
        let mismatch = TensorError::DType { want: self.dtype(), got: other.dtype() };
        match (self, other) {
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::U16(a), TensorData::U16(b)) => a.extend_from_slice(b),
            (TensorData::U32(a), TensorData::U32(b)) => a.extend_from_slice(b),
            (TensorData::U64(a), TensorData::U64(b)) => a.extend_from_slice(b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
            (TensorData::I16(a), TensorData::I16(b)) => a.extend_from_slice(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
            (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
            (TensorData::F16(a), TensorData::F16(b)) => a.extend_from_slice(b),
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
            _ => return Err(mismatch),
        }
        Ok(())
    }

    /// Pads with zeros (or truncates) to `n` elements: a batch filled up to a compiled plan's size.
    pub fn resize(&mut self, n: usize) {
        each!(self, v => v.resize(n, Default::default()))
    }

    /// Moves the values into a tract tensor of `shape` (no copy). The element count must match the shape.
    pub fn into_tract(self, shape: &[usize]) -> Result<Tensor, TensorError> {
        let shape_err = |e: tract_ndarray::ShapeError| TensorError::Shape(format!("shape {shape:?}: {e}"));
        Ok(each!(self, v => tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), v).map_err(shape_err)?.into_tensor()))
    }

    /// The first `n` elements of a tract tensor (all when `n` is larger), in the tensor's own type.
    pub fn from_tract_prefix(t: &Tensor, n: usize) -> Result<TensorData, TensorError> {
        let dtype = dtype_of(t.datum_type()).map_err(TensorError::Unsupported)?;
        Ok(for_dtype!(dtype, T => take::<T>(t, n)?))
    }

    /// Every element of a tract tensor.
    pub fn from_tract(t: &Tensor) -> Result<TensorData, TensorError> {
        TensorData::from_tract_prefix(t, t.len())
    }

    /// At most `max` values spread evenly over the tensor, as f32 (booleans as 0 and 1; integers rounded
    /// to the nearest f32): the input sample drift histograms bin.
    pub fn sample_f32(&self, max: usize) -> Vec<f32> {
        let stride = self.len().div_ceil(max.max(1)).max(1);
        each!(self, v => v.iter().step_by(stride).map(|x| x.to_f64() as f32).collect())
    }

    /// The values as f32 when the tensor is FP32 (the common case, borrowed without a copy).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Whether every floating-point value is finite (always true for integers and booleans).
    pub fn all_finite(&self) -> bool {
        match self {
            TensorData::F16(v) => v.iter().all(|x| x.is_finite()),
            TensorData::F32(v) => v.iter().all(|x| x.is_finite()),
            TensorData::F64(v) => v.iter().all(|x| x.is_finite()),
            _ => true,
        }
    }

    /// Whether element `i` holds the same value in both tensors, exactly: integers beyond 2^53 are not
    /// compared through f64, and a NaN equals nothing.
    pub fn same_at(&self, other: &TensorData, i: usize) -> bool {
        values_equal(self, other, i)
    }

    /// Element `i` as f64 (for reports), `None` past the end.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        each!(self, v => v.get(i).map(|x| x.to_f64()))
    }
}

/// The protocol's name for a tract element type; anything the Open Inference Protocol does not serve
/// (strings, blobs, symbolic dimensions, quantized or complex types) is named in the error.
pub fn dtype_of(dt: DatumType) -> Result<DType, String> {
    Ok(match dt {
        DatumType::Bool => DType::Bool,
        DatumType::U8 => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::I8 => DType::I8,
        DatumType::I16 => DType::I16,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::F16 => DType::F16,
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        other => return Err(format!("{other:?}")),
    })
}

/// tract's element type for a protocol type.
pub fn datum_type(d: DType) -> DatumType {
    match d {
        DType::Bool => DatumType::Bool,
        DType::U8 => DatumType::U8,
        DType::U16 => DatumType::U16,
        DType::U32 => DatumType::U32,
        DType::U64 => DatumType::U64,
        DType::I8 => DatumType::I8,
        DType::I16 => DatumType::I16,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
        DType::F16 => DatumType::F16,
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
    }
}

/// Elements in a tensor of `shape`, or `None` when the product overflows.
pub fn element_count<D: Copy + TryInto<usize>>(shape: &[D]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d.try_into().ok()?))
}

/// The values of a self-test or reference tensor, checked against its shape.
pub fn from_manifest(t: &manifest::Tensor) -> Result<TensorData, TensorError> {
    let data = TensorData::from_le_bytes(t.dtype, &t.data)?;
    match element_count(&t.shape) {
        Some(n) if n == data.len() => Ok(data),
        _ => Err(TensorError::Shape(format!(
            "tensor {} has {} {} values; shape {:?} needs {}",
            t.name,
            data.len(),
            t.dtype,
            t.shape,
            element_count(&t.shape).map_or("more than can be addressed".to_owned(), |n| n.to_string())
        ))),
    }
}

/// A self-test or reference tensor holding `data` with `shape`.
pub fn to_manifest(name: &str, shape: &[usize], data: &TensorData) -> manifest::Tensor {
    manifest::Tensor {
        name: name.to_owned(),
        dtype: data.dtype(),
        shape: shape.iter().map(|&d| d as u64).collect(),
        data: data.to_le_bytes(),
    }
}

/// Why `got` (with `got_shape`) does not reproduce `want`, or `Ok`. Integers and booleans must be equal;
/// floats within `tol` (`|got − want| ≤ abs + rel·|want|`), and a NaN never passes unless expected.
pub fn compare(got: &TensorData, got_shape: &[usize], want: &manifest::Tensor, tol: Tolerance) -> Result<(), String> {
    let name = &want.name;
    if got.dtype() != want.dtype {
        return Err(format!("output {name} is {}, expected {}", got.dtype(), want.dtype));
    }
    let shape: Vec<u64> = got_shape.iter().map(|&d| d as u64).collect();
    if shape != want.shape {
        return Err(format!("output {name}: shape {shape:?}, expected {:?}", want.shape));
    }
    let expected = from_manifest(want).map_err(|e| format!("expected output {name}: {e}"))?;
    let differs = |i: usize| {
        let (g, w) = (got.get_f64(i).unwrap_or(f64::NAN), expected.get_f64(i).unwrap_or(f64::NAN));
        if want.dtype.is_float() {
            let both_nan = g.is_nan() && w.is_nan();
            let close = (g - w).abs() <= f64::from(tol.abs) + f64::from(tol.rel) * w.abs();
            !(both_nan || close)
        } else {
            !values_equal(got, &expected, i)
        }
    };
    match (0..expected.len().max(got.len())).find(|&i| differs(i)) {
        Some(i) => Err(format!(
            "output {name}[{i}] = {}, expected {}{}",
            show(got, i),
            show(&expected, i),
            if want.dtype.is_float() { format!(" (tolerance {tol:?})") } else { " (exact)".into() }
        )),
        None => Ok(()),
    }
}

/// Exact equality of element `i` (integers beyond 2^53 must not be compared through f64).
fn values_equal(a: &TensorData, b: &TensorData, i: usize) -> bool {
    match (a, b) {
        (TensorData::I64(x), TensorData::I64(y)) => x.get(i) == y.get(i),
        (TensorData::U64(x), TensorData::U64(y)) => x.get(i) == y.get(i),
        _ => a.get_f64(i).is_some() && a.get_f64(i) == b.get_f64(i),
    }
}

/// Element `i` as written (integers exactly).
pub(crate) fn show(t: &TensorData, i: usize) -> String {
    match t {
        TensorData::I64(v) => v.get(i).map(|x| x.to_string()),
        TensorData::U64(v) => v.get(i).map(|x| x.to_string()),
        TensorData::Bool(v) => v.get(i).map(|x| x.to_string()),
        other => other.get_f64(i).map(|x| x.to_string()),
    }
    .unwrap_or_else(|| "(missing)".into())
}

#[cfg(test)]
#[path = "tensor_tests.rs"]
mod tests;
