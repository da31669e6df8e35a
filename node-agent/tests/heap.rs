//! The agent's allocator setting (`selfmon::heap_gives_back_large_blocks`), alone in a process
//! of its own: beside other tests, their allocations would move the figures it reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Bytes in blocks glibc gave mappings of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn mapped_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters under its lock.
    unsafe { libc::mallinfo2() }.hblkhd
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_large_block_after_a_larger_one_is_freed_still_gets_its_own_mapping() {
    assert!(vigil_agent::selfmon::heap_gives_back_large_blocks(), "glibc refused the setting");
    // By default glibc raises its threshold to the size of a mapped block freed: 4 MiB here,
    // and a 1 MiB table grown after it would come from the heap and stay there when freed.
    drop(std::hint::black_box(vec![1_u8; 4 << 20]));
    let before = mapped_bytes();
    let table = std::hint::black_box(vec![1_u8; 1 << 20]);
    let during = mapped_bytes();
    drop(table);
    assert!(during >= before + (1 << 20), "the 1 MiB block was not mapped on its own: {before} -> {during} bytes");
    assert!(mapped_bytes() < during, "freeing it did not give its mapping back");
}
