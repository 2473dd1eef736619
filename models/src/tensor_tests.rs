use super::*;

fn every_type() -> Vec<TensorData> {
    vec![
        TensorData::Bool(vec![true, false, true]),
        TensorData::U8(vec![0, 7, 255]),
        TensorData::U16(vec![0, 700, u16::MAX]),
        TensorData::U32(vec![0, 70_000, u32::MAX]),
        TensorData::U64(vec![0, 1 << 60, u64::MAX]),
        TensorData::I8(vec![i8::MIN, -1, i8::MAX]),
        TensorData::I16(vec![i16::MIN, -1, i16::MAX]),
        TensorData::I32(vec![i32::MIN, -1, i32::MAX]),
        TensorData::I64(vec![i64::MIN, (1 << 53) + 1, i64::MAX]),
        TensorData::F16(vec![f16::from_f32(-1.5), f16::from_f32(0.0), f16::from_f32(65504.0)]),
        TensorData::F32(vec![-1.5, 0.0, 3.25]),
        TensorData::F64(vec![-1.5, 1e300, 3.25]),
    ]
}

#[test]
fn every_type_round_trips_through_little_endian_bytes_and_tract_tensors() {
    for t in every_type() {
        let bytes = t.to_le_bytes();
        assert_eq!(bytes.len(), 3 * t.dtype().size(), "{:?}", t.dtype());
        assert_eq!(TensorData::from_le_bytes(t.dtype(), &bytes).unwrap(), t);
        let tract = t.clone().into_tract(&[3]).unwrap();
        assert_eq!(datum_type(t.dtype()), tract.datum_type());
        assert_eq!(TensorData::from_tract(&tract).unwrap(), t);
        assert_eq!(TensorData::from_tract_prefix(&tract, 2).unwrap(), t.slice(0..2).unwrap());
        let mut chunks = Vec::new();
        t.for_each_le_chunk(|c| chunks.extend_from_slice(c));
        assert_eq!(chunks, bytes);
    }
}

#[test]
fn every_protocol_type_has_a_tract_type_and_back() {
    for d in DType::ALL {
        assert_eq!(dtype_of(datum_type(d)).unwrap(), d);
        assert_eq!(DType::parse(d.as_str()), Some(d));
        assert_eq!(TensorData::zeros(d, 2).dtype(), d);
    }
    assert_eq!(DType::parse("BYTES"), None);
    assert!(dtype_of(DatumType::String).unwrap_err().contains("String"));
}

#[test]
fn ragged_bytes_and_non_boolean_bytes_are_refused() {
    assert_eq!(
        TensorData::from_le_bytes(DType::I64, &[0; 12]).unwrap_err(),
        TensorError::Length { dtype: DType::I64, bytes: 12 }
    );
    assert_eq!(
        TensorData::from_le_bytes(DType::Bool, &[0, 1, 2]).unwrap_err(),
        TensorError::Bool { index: 2, value: 2 }
    );
}

#[test]
fn a_shape_that_disagrees_with_the_values_is_an_error_not_a_panic() {
    assert!(matches!(TensorData::F32(vec![1.0; 5]).into_tract(&[2, 2]), Err(TensorError::Shape(_))));
    let t = manifest::Tensor { name: "x".into(), dtype: DType::U8, shape: vec![u64::MAX, 2], data: vec![1, 2] };
    assert!(from_manifest(&t).unwrap_err().to_string().contains("more than can be addressed"));
    assert_eq!(element_count(&[1u64 << 40, 1 << 40]), None);
}

#[test]
fn integers_compare_exactly_and_floats_within_the_tolerance() {
    let tol = Tolerance::default();
    let want = to_manifest("ids", &[3], &TensorData::I64(vec![1, (1 << 53) + 1, 3]));
    assert!(compare(&TensorData::I64(vec![1, (1 << 53) + 1, 3]), &[3], &want, tol).is_ok());
    // 2^53 + 1 and 2^53 are the same f64: the comparison must not go through floats.
    let e = compare(&TensorData::I64(vec![1, 1 << 53, 3]), &[3], &want, tol).unwrap_err();
    assert!(e.contains("ids[1] = 9007199254740992, expected 9007199254740993 (exact)"), "{e}");
    let want = to_manifest("p", &[2], &TensorData::F32(vec![1.0, 2.0]));
    assert!(compare(&TensorData::F32(vec![1.0005, 2.0]), &[2], &want, tol).is_ok());
    assert!(compare(&TensorData::F32(vec![1.01, 2.0]), &[2], &want, tol).unwrap_err().contains("p[0]"));
    assert!(compare(&TensorData::F32(vec![f32::NAN, 2.0]), &[2], &want, tol).is_err());
    assert!(
        compare(&TensorData::F64(vec![1.0, 2.0]), &[2], &want, tol).unwrap_err().contains("is FP64, expected FP32")
    );
    assert!(compare(&TensorData::F32(vec![1.0, 2.0]), &[1, 2], &want, tol).unwrap_err().contains("shape"));
    let want = to_manifest("m", &[2], &TensorData::Bool(vec![true, false]));
    assert!(compare(&TensorData::Bool(vec![true, true]), &[2], &want, tol).is_err());
}

#[test]
fn batches_join_pad_and_split_in_their_own_type() {
    let mut a = TensorData::U8(vec![1, 2]);
    a.extend_from(&TensorData::U8(vec![3])).unwrap();
    assert!(a.extend_from(&TensorData::I8(vec![3])).is_err());
    a.resize(5);
    assert_eq!(a, TensorData::U8(vec![1, 2, 3, 0, 0]));
    assert_eq!(a.slice(1..3), Some(TensorData::U8(vec![2, 3])));
    assert_eq!(a.slice(4..9), None);
    assert_eq!(TensorData::Bool(vec![true, false, true, true]).sample_f32(2), vec![1.0, 1.0]);
}
