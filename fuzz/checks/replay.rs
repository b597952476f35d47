//! The bounded stand-in for libFuzzer that `cargo test` runs on stable: every committed seed of a
//! target, then random byte-level mutations of them (flip, insert, delete, splice), a fixed number
//! of cases. It keeps each target compiling and its properties holding in every CI run; the real
//! exploration is `cargo +nightly fuzz run` (fuzz/README.md).

use proptest::prelude::*;

/// The committed seeds of `target` (`fuzz/corpus/<target>/seed-*`).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

/// One edit of a byte string: `(where, byte, kind)`.
type Edit = (prop::sample::Index, u8, u8);

fn mutate(seed: &[u8], other: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for (at, byte, kind) in edits {
        let i = if out.is_empty() {
            0
        } else {
            at.index(out.len())
        };
        match kind % 4 {
            0 if !out.is_empty() => out[i] = *byte,
            1 => out.insert(i.min(out.len()), *byte),
            2 if !out.is_empty() => {
                out.remove(i);
            }
            _ => {
                // Splice in a piece of another seed: keeps the structure the parsers look for.
                let j = if other.is_empty() {
                    0
                } else {
                    at.index(other.len())
                };
                let piece = &other[j..other.len().min(j + usize::from(*byte % 32))];
                let at = i.min(out.len());
                out.splice(at..at, piece.iter().copied());
            }
        }
    }
    out
}

/// Runs `check` on every seed of `target` and on `cases` mutations of them.
pub fn replay(target: &str, cases: u32, check: fn(&[u8])) {
    let seeds = seeds(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for s in &seeds {
        check(s);
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        proptest::collection::vec(any::<Edit>(), 1..8),
    );
    let result = runner.run(&strategy, |(a, b, edits)| {
        let input = mutate(
            &seeds[a.index(seeds.len())],
            &seeds[b.index(seeds.len())],
            &edits,
        );
        check(&input);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
}
