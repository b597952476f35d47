use super::*;

/// Runs `f`, which panics while holding a lock, on a thread of its own.
fn poison(f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        let _ = s.spawn(f).join();
    });
}

#[test]
fn a_poisoned_mutex_gives_its_value_back() {
    let m = Mutex::new(1);
    poison(|| {
        let mut v = lock(&m);
        *v += 1;
        panic!("poisoning the lock on purpose");
    });
    assert!(m.is_poisoned());
    *lock(&m) += 1;
    assert_eq!(*lock(&m), 3);
}

#[test]
fn a_poisoned_rwlock_gives_its_value_back() {
    let l = RwLock::new(vec![1]);
    poison(|| {
        let mut v = write(&l);
        v.push(2);
        panic!("poisoning the lock on purpose");
    });
    assert!(l.is_poisoned());
    write(&l).push(3);
    assert_eq!(*read(&l), [1, 2, 3]);
}
