//! The shared tail reader on a 1 GiB `messages.csv`: opening it at the end
//! reads a few KiB, not the gigabyte, and following it still works.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use chatroom::viewer::tail::{Restart, Start, Tail, TailEvent};

const GIB: u64 = 1 << 30;

/// Writes a 1 GiB messages file fast: one block of rows repeated, then
/// `tail_rows` rows with ids that tell them apart.
fn write_big_file(path: &Path, tail_rows: u64) {
    let mut block = String::new();
    let mut id = 0u64;
    while block.len() < (1 << 20) - 200 {
        id += 1;
        block.push_str(&format!(
            "{id},2026-11-21T18:05:09.123+00:00,general,alice,,\"hello, this is filler row {id}\"\n"
        ));
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(b"id,timestamp,room,sender,recipient,text\n")
        .unwrap();
    let mut written = 0u64;
    while written < GIB {
        file.write_all(block.as_bytes()).unwrap();
        written += block.len() as u64;
    }
    for i in 1..=tail_rows {
        writeln!(
            file,
            "{},2026-11-21T18:06:00.000+00:00,general,bob,,last {i}",
            10_000_000 + i
        )
        .unwrap();
    }
    file.flush().unwrap();
}

fn ids(tail: &mut Tail, events: &mut Vec<String>) {
    loop {
        let progress = tail
            .poll(8 << 20, &mut |event| match event {
                TailEvent::Row(row) => {
                    events.push(String::from_utf8_lossy(row.get(0).unwrap_or(b"?")).into_owned())
                }
                TailEvent::Restarted(Restart::Truncated) => events.push("truncated".into()),
                TailEvent::Restarted(Restart::Replaced) => events.push("replaced".into()),
                TailEvent::Header(_) | TailEvent::Opened { .. } => {}
            })
            .unwrap();
        if !progress.more {
            return;
        }
    }
}

#[test]
fn a_gigabyte_file_opens_at_its_last_rows_without_reading_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.csv");
    write_big_file(&path, 60);
    assert!(std::fs::metadata(&path).unwrap().len() > GIB);

    let mut tail = Tail::new(&path, Start::LastRows(50));
    let mut rows = Vec::new();
    ids(&mut tail, &mut rows);
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0], "10000011");
    assert_eq!(rows[49], "10000060");
    assert!(
        tail.bytes_read() < 64 * 1024,
        "opening the tail read {} bytes",
        tail.bytes_read()
    );

    // Following goes on from there: a half-written row waits for its end.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"20000000,2026-11-21T18:07:00.000+00:00,general,carol,,half")
        .unwrap();
    rows.clear();
    ids(&mut tail, &mut rows);
    assert!(rows.is_empty(), "{rows:?}");
    file.write_all(b" and done\n").unwrap();
    ids(&mut tail, &mut rows);
    assert_eq!(rows, ["20000000"]);

    // Cut down to its header and one row: the tail starts over from the top.
    let header_and_one = b"id,timestamp,room,sender,recipient,text\n1,2026-11-21T18:05:09.123+00:00,general,alice,,\"hello, this is filler row 1\"\n";
    file.set_len(header_and_one.len() as u64).unwrap();
    rows.clear();
    ids(&mut tail, &mut rows);
    assert_eq!(rows, ["truncated", "1"]);
    assert!(tail.bytes_read() < 128 * 1024);
}
