"""BufferedNonces hands out every 12-byte slice once: across threads and across fork."""

import os
import threading

from piiguard.crypto.nonces import BufferedNonces


def test_threads_never_receive_the_same_nonce():
    source = BufferedNonces()
    out: list[list[bytes]] = [[] for _ in range(8)]

    def work(bucket):
        for _ in range(20_000):
            try:
                bucket.append(source.next12())
            except ValueError:      # raced: the caller's documented fallback
                bucket.append(os.urandom(12))

    threads = [threading.Thread(target=work, args=(b,)) for b in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [n for bucket in out for n in bucket]
    assert len(every) == 160_000
    assert all(len(n) == 12 for n in every)
    assert len(set(every)) == len(every)


def test_forked_child_does_not_reuse_the_parents_buffer():
    source = BufferedNonces()
    source(12)                      # the buffer is now filled, 340 slices left in it
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                    # child: report the next 50 nonces, then leave
        os.close(r)
        os.write(w, b"".join(source(12) for _ in range(50)))
        os._exit(0)
    os.close(w)
    child = b""
    while chunk := os.read(r, 4096):
        child += chunk
    os.close(r)
    os.waitpid(pid, 0)
    parent = [source(12) for _ in range(50)]
    child_nonces = [child[i:i + 12] for i in range(0, len(child), 12)]
    assert len(child_nonces) == 50
    assert not set(parent) & set(child_nonces)


def test_other_sizes_come_straight_from_the_os():
    source = BufferedNonces()
    assert len(source(16)) == 16 and source(16) != source(16)
