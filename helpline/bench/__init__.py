"""`helpline bench`: the whole service under a realistic load, measured from the outside.

The benchmark starts everything itself, on free ports and a fresh database: one or more
`helpline serve` processes (SQLite, or PostgreSQL with Redis carrying Socket.IO events between the
processes), the project's Twilio emulator, and - with several processes - one `helpline scheduler`.
Emulated callers ring through the IVR into the queue while emulated handlers (real console users:
HTTP log-in, a Socket.IO client on `/console`, a softphone registered in the emulator) accept, talk,
book, hang up and wrap up. What it prints and writes (JSON and a PNG chart) is described in
`report.py`; how the load is shaped, in `paced.py` and `saturated.py`.

Modules:
    stack      starting and stopping the processes, and where they listen
    handlers   an emulated handler's console
    paced      callers at a realistic pace, and the per-step latencies
    saturated  callers back to back, beside a bare Flask app (`bare.py`)
    decision   the routing decision with 10,000 waiting calls
    report     percentiles, memory, the JSON and the chart
    cli        the `helpline bench` command
"""
