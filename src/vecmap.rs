//! A map kept as a vector sorted by key, for the daemon's tables of one
//! entry per app or process: it costs its entries and no more (a hash map
//! of a thousand entries keeps 2048 slots), a look-up is a binary search,
//! and keys that come in order (tokens, pids) are put at the end.

/// Entries sorted by key, each key once.
#[derive(Debug)]
pub struct VecMap<K, V> {
    v: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { v: Vec::new() }
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    fn find(&self, k: K) -> Result<usize, usize> {
        self.v.binary_search_by(|e| e.0.cmp(&k))
    }

    /// Set `k` to `val`; the value it had.
    pub fn insert(&mut self, k: K, val: V) -> Option<V> {
        match self.find(k) {
            Ok(i) => self.v.get_mut(i).map(|e| std::mem::replace(&mut e.1, val)),
            Err(i) => {
                self.v.insert(i, (k, val));
                None
            }
        }
    }

    pub fn get(&self, k: K) -> Option<&V> {
        let i = self.find(k).ok()?;
        self.v.get(i).map(|e| &e.1)
    }

    pub fn contains_key(&self, k: K) -> bool {
        self.find(k).is_ok()
    }

    /// Take `k` out; its value. The room of a map that shrank to a quarter
    /// is given back.
    pub fn remove(&mut self, k: K) -> Option<V> {
        let i = self.find(k).ok()?;
        let (_, val) = self.v.remove(i);
        if self.v.capacity() > 4 * self.v.len() + 16 {
            self.v.shrink_to(2 * self.v.len());
        }
        Some(val)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// Every entry, in the order of keys.
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.v.iter().map(|e| (e.0, &e.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_of_inserts_and_removes() {
        // (insert: Some(value) / remove: None, key, what it returns, the
        // keys after)
        type Step = (Option<u32>, i32, Option<u32>, &'static [i32]);
        let steps: &[Step] = &[
            (Some(1), 5, None, &[5]),
            (Some(2), 9, None, &[5, 9]),
            (Some(3), 1, None, &[1, 5, 9]),
            (Some(4), 7, None, &[1, 5, 7, 9]),
            (Some(5), 5, Some(1), &[1, 5, 7, 9]),
            (None, 5, Some(5), &[1, 7, 9]),
            (None, 5, None, &[1, 7, 9]),
            (None, 1, Some(3), &[7, 9]),
            (None, 9, Some(2), &[7]),
        ];
        let mut m = VecMap::default();
        for (i, &(insert, k, want, keys)) in steps.iter().enumerate() {
            let got = match insert {
                Some(v) => m.insert(k, v),
                None => m.remove(k),
            };
            assert_eq!(got, want, "step {i}");
            let now: Vec<i32> = m.iter().map(|e| e.0).collect();
            assert_eq!(now, keys, "step {i}");
            assert_eq!(m.v.len(), keys.len());
            for &k in keys {
                assert!(m.contains_key(k) && m.get(k).is_some(), "step {i}: {k}");
            }
        }
        assert_eq!(m.get(7), Some(&4));
        assert_eq!((m.get(8), m.contains_key(8)), (None, false));
    }

    #[test]
    fn its_room_follows_its_entries() {
        let mut m = VecMap::default();
        for k in 0..1000 {
            m.insert(k, ());
        }
        assert!(m.v.capacity() < 2048, "{}", m.v.capacity());
        for k in 10..1000 {
            assert_eq!(m.remove(k), Some(()));
        }
        assert!(m.v.capacity() <= 4 * 10 + 16, "{}", m.v.capacity());
        assert_eq!(m.v.len(), 10);
    }
}
