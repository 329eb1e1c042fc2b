use super::*;

#[test]
fn small_files_are_read_once_large_ones_stay_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    std::fs::write(&small, b"Subject: x\n\nhi\n").expect("write");
    assert_eq!(
        Message::small_file_in_memory(&small),
        Message::Inline(b"Subject: x\n\nhi\n".to_vec())
    );
    let large = dir.path().join("large");
    std::fs::write(&large, vec![b'a'; 70_000]).expect("write");
    assert_eq!(
        Message::small_file_in_memory(&large),
        Message::File(large.clone())
    );
    let missing = dir.path().join("missing");
    assert_eq!(
        Message::small_file_in_memory(&missing),
        Message::File(missing.clone())
    );
    assert!(Message::small_file_in_memory(&missing).facts().is_err());
}

#[test]
fn a_recycled_buffer_never_shows_old_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("long");
    std::fs::write(&long, b"AAAAAAAAAAAAAAAA").expect("write");
    let short = dir.path().join("short");
    std::fs::write(&short, b"BB").expect("write");
    let first =
        Message::from_open_file(&File::open(&long).expect("open"), 16, long.clone()).expect("read");
    assert_eq!(first, Message::Inline(b"AAAAAAAAAAAAAAAA".to_vec()));
    first.recycle();
    // Claims more bytes than the file has: only what is there counts.
    let second = Message::from_open_file(&File::open(&short).expect("open"), 10, short.clone())
        .expect("read");
    assert_eq!(second, Message::Inline(b"BB".to_vec()));
}

#[test]
fn open_files_are_read_by_their_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    std::fs::write(&small, b"Subject: x\n\nhi\n").expect("write");
    let file = File::open(&small).expect("open");
    assert_eq!(
        Message::from_open_file(&file, 15, small.clone()).expect("read"),
        Message::Inline(b"Subject: x\n\nhi\n".to_vec())
    );
    // A file that shrank since its size was taken gives what is there.
    let file = File::open(&small).expect("open");
    assert_eq!(
        Message::from_open_file(&file, 100, small.clone()).expect("read"),
        Message::Inline(b"Subject: x\n\nhi\n".to_vec())
    );
    let file = File::open(&small).expect("open");
    let large =
        Message::from_open_file(&file, IN_MEMORY_LIMIT + 1, small.clone()).expect("open file");
    assert!(matches!(large, Message::Open(_)), "{large:?}");
    // Read through the descriptor, from the start, on every pass.
    for _ in 0..2 {
        let mut text = Vec::new();
        large
            .open()
            .expect("open")
            .read_to_end(&mut text)
            .expect("read");
        assert_eq!(text, b"Subject: x\n\nhi\n");
    }
}
