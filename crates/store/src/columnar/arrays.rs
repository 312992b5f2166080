//! Values read out of the Arrow arrays of a sealed partition's row group: texts of
//! dictionary or plain string columns, and the row conditions of a query.

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef};

/// The text of row `row` of a dictionary or string array, `None` when absent.
pub(crate) fn text_of(array: &ArrayRef, row: usize) -> Option<&str> {
    if array.is_null(row) {
        return None;
    }
    if let Some(coded) = array.as_dictionary_opt::<Int32Type>() {
        let key = coded.keys().value(row) as usize;
        return Some(coded.values().as_string::<i32>().value(key));
    }
    Some(array.as_string::<i32>().value(row))
}

/// Clears `keep` of every row whose text is not `value`.
pub(crate) fn keep_equal_text(array: &ArrayRef, value: &str, keep: &mut [bool]) {
    if let Some(coded) = array.as_dictionary_opt::<Int32Type>() {
        let values = coded.values().as_string::<i32>();
        let matching_keys: Vec<i32> = (0..values.len())
            .filter(|&key| values.is_valid(key) && values.value(key) == value)
            .map(|key| key as i32)
            .collect();
        let keys = coded.keys();
        for (row, keep) in keep.iter_mut().enumerate() {
            *keep &= keys.is_valid(row) && matching_keys.contains(&keys.value(row));
        }
        return;
    }
    let texts = array.as_string::<i32>();
    for (row, keep) in keep.iter_mut().enumerate() {
        *keep &= texts.is_valid(row) && texts.value(row) == value;
    }
}

/// Clears `keep` of every row whose number is not `wanted` (when a number is wanted).
pub(crate) fn keep_equal_number<T: arrow_array::ArrowPrimitiveType>(
    array: Option<ArrayRef>,
    wanted: Option<T::Native>,
    keep: &mut [bool],
) where
    T::Native: PartialEq,
{
    let (Some(array), Some(wanted)) = (array, wanted) else {
        return;
    };
    let numbers = array.as_primitive::<T>();
    for (row, keep) in keep.iter_mut().enumerate() {
        *keep &= numbers.is_valid(row) && numbers.value(row) == wanted;
    }
}
