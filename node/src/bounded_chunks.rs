//! Splitting a list into runs bounded in count and in bytes: what goes in
//! one message, or one request, however wide the items are.

/// Splits `items` into consecutive runs of at most `items_max` items and
/// `bytes_max` bytes as `bytes_of` counts them; an item larger than
/// `bytes_max` goes alone. A run is cut only when the next item would
/// break a bound.
pub fn bounded_chunks<T>(
    items: &[T],
    items_max: usize,
    bytes_max: usize,
    bytes_of: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    assert!(items_max > 0, "a chunk holds at least one item");
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (index, item) in items.iter().enumerate() {
        let item_bytes = bytes_of(item);
        let full = index - start == items_max || bytes.saturating_add(item_bytes) > bytes_max;
        if index > start && full {
            chunks.push(&items[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes = bytes.saturating_add(item_bytes);
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    debug_assert_eq!(chunks.iter().map(|chunk| chunk.len()).sum::<usize>(), items.len());
    chunks
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every item is in one chunk, in order; a chunk holds at most
        /// `items_max` items and `bytes_max` bytes, or one item; and it is
        /// not cut before a bound makes it.
        #[test]
        fn chunks_are_bounded_and_no_smaller_than_they_must_be(
            sizes in prop::collection::vec(prop_oneof![0usize..100, 900usize..3_000], 0..300),
            items_max in 1usize..50,
            bytes_max in 0usize..5_000,
        ) {
            let chunks = bounded_chunks(&sizes, items_max, bytes_max, |size| *size);
            prop_assert_eq!(chunks.concat(), sizes.clone());
            for (index, chunk) in chunks.iter().enumerate() {
                let bytes: usize = chunk.iter().sum();
                prop_assert!(!chunk.is_empty() && chunk.len() <= items_max);
                prop_assert!(chunk.len() == 1 || bytes <= bytes_max);
                if let Some(next) = chunks.get(index + 1) {
                    prop_assert!(chunk.len() == items_max || bytes + next[0] > bytes_max);
                }
            }
        }
    }

    #[test]
    fn nothing_is_no_chunk() {
        assert!(bounded_chunks(&[0u8; 0], 1, 1, |_| 1).is_empty());
        assert_eq!(bounded_chunks(&[5, 5, 5], 10, 4, |size| *size), [&[5][..], &[5], &[5]]);
        assert_eq!(bounded_chunks(&[1, 1, 1], 2, 100, |size| *size), [&[1, 1][..], &[1]]);
    }
}
