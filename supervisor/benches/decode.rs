//! How many ring-buffer records per second the supervisor decodes: the userspace side of
//! "events are never lost", measured without the kernel (`cargo xtask bench decode`).
#![expect(clippy::expect_used, reason = "benchmark setup")]

use governor::probes::events;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use governor_common::{EventHeader, OpenEvent, PATH_LEN, kind, source, verdict};

fn record() -> Vec<u8> {
    let mut path = [0u8; PATH_LEN];
    let text = b"/home/agent/project/src/main.rs";
    path[..text.len()].copy_from_slice(text);
    let event = OpenEvent {
        header: EventHeader {
            kind: kind::OPEN,
            result: 0,
            ktime_ns: 1,
            pid: 2,
            tgid: 2,
            uid: 0,
            verdict: verdict::OBSERVED,
            source: source::TRACEPOINT,
            cgroup_id: 3,
        },
        flags: 0,
        dirfd: -100,
        dev: 0,
        ino: 0,
        path,
    };
    // SAFETY: the bytes of a plain-old-data event.
    unsafe { std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<OpenEvent>()) }.to_vec()
}

fn decode(c: &mut Criterion) {
    let bytes = record();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open event", |b| b.iter(|| events::decode(black_box(&bytes)).expect("decodes")));
    group.bench_function("open event, counted by the sink", |b| {
        let mut tally = events::Tally::default();
        b.iter(|| {
            let event = events::decode(black_box(&bytes)).expect("decodes");
            events::Sink::event(&mut tally, &event);
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
