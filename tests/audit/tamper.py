#!/usr/bin/env python3
"""Edits a governor audit store the way someone who read audit.rs would, so that every chain
still holds on its own. Modes:
  truncate DB  remove the newest row of the agents table
  rechain DB   rewrite the oldest agents row's command, then recompute the chain after it
The hash is SHA-256 over the previous row's hash and the row's values (audit::chain_hash)."""
import hashlib
import sqlite3
import sys

COLUMNS = ["agent", "trust", "command", "user", "cgroup", "backend", "time"]


def chain_hash(prev, values):
    digest = hashlib.sha256(prev.encode())
    for value in values:
        if isinstance(value, int):
            digest.update(b"\x1fi" + str(value).encode())
        else:
            text = ("" if value is None else str(value)).encode()
            digest.update(b"\x1ft" + str(len(text)).encode() + b":" + text)
    return digest.hexdigest()


def main():
    mode, path = sys.argv[1], sys.argv[2]
    db = sqlite3.connect(path)
    if mode == "truncate":
        db.execute("DELETE FROM agents WHERE seq = (SELECT max(seq) FROM agents)")
    elif mode == "rechain":
        rows = db.execute(f"SELECT seq, {', '.join(COLUMNS)}, prev FROM agents ORDER BY seq").fetchall()
        prev = rows[0][-1]
        for index, row in enumerate(rows):
            values = list(row[1:-1])
            if index == 0:
                values[COLUMNS.index("command")] = "nothing happened here"
            digest = chain_hash(prev, values)
            assignments = ", ".join(f"{column} = ?" for column in COLUMNS)
            db.execute(f"UPDATE agents SET {assignments}, prev = ?, hash = ? WHERE seq = ?", (*values, prev, digest, row[0]))
            prev = digest
    else:
        sys.exit(f"unknown mode {mode}")
    db.commit()
    print("tampered")


main()
