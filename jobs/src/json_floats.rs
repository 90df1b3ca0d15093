//! Floats in `sql --format json`: JSON has no number for NaN or ±infinity,
//! and arrow's writer turns them into `null`, which reads as SQL NULL. The
//! lake has such values on purpose (`rel_l2_change` is +infinity for a
//! tensor trained away from an all-zero base), so they are written as the
//! strings `"NaN"`, `"Infinity"` and `"-Infinity"` (as Spark's JSON writer
//! and Python's `json` spell them); finite values stay numbers.

use std::io::Write;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{DataType, FieldRef, Float32Type, Float64Type};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};

/// The [`EncoderFactory`] for float columns.
#[derive(Debug)]
pub(crate) struct NonFiniteAsText;

impl EncoderFactory for NonFiniteAsText {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Float64 => Box::new(Floats(array.as_primitive::<Float64Type>().values())),
            DataType::Float32 => Box::new(Floats(array.as_primitive::<Float32Type>().values())),
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, array.nulls().cloned())))
    }
}

/// The values of one float column.
struct Floats<'a, T>(&'a [T]);

impl<T: Copy + Into<f64> + std::fmt::Debug> Encoder for Floats<'_, T> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.0[idx];
        let wide: f64 = v.into();
        let _ = if wide.is_nan() {
            out.write_all(b"\"NaN\"")
        } else if wide == f64::INFINITY {
            out.write_all(b"\"Infinity\"")
        } else if wide == f64::NEG_INFINITY {
            out.write_all(b"\"-Infinity\"")
        } else {
            // `Debug` writes the shortest form that reads back as the same
            // value (`0.1`, `1e300`, `2.0`): valid JSON numbers.
            write!(out, "{v:?}")
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Float32Array, Float64Array, RecordBatch};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use crate::sql::{OutputFormat, format_batches};

    #[test]
    fn non_finite_floats_are_text_and_nulls_stay_null() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Float64, true),
            Field::new("f", DataType::Float32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![
                    Some(f64::INFINITY),
                    Some(f64::NAN),
                    None,
                    Some(0.1),
                ])),
                Arc::new(Float32Array::from(vec![
                    Some(f32::NEG_INFINITY),
                    Some(1.5),
                    Some(2.0),
                    None,
                ])),
            ],
        )
        .expect("batch");
        let out = format_batches(&[batch], OutputFormat::Json).expect("json");
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(rows[0]["d"], "Infinity");
        assert_eq!(rows[0]["f"], "-Infinity");
        assert_eq!(rows[1]["d"], "NaN");
        assert_eq!(rows[1]["f"], 1.5);
        assert!(rows[2]["d"].is_null());
        assert_eq!(rows[2]["f"], 2.0);
        assert_eq!(rows[3]["d"], 0.1);
        assert!(rows[3]["f"].is_null());
    }
}
