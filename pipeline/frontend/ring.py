"""One of K front-end processes on capture files, as a state machine (sans-IO).

The reader (the supervisor) numbers the frames and sends chunk j to process j mod K.
Each process decodes its chunks as they come (`FrontEnd.decode`, in parallel with the
others), then waits for chunk j's turn: the sequenced part (`FrontEnd.sequence`) runs
one chunk at a time, in chunk order, on the state the previous chunk left, which
travels with the turn (the token, `sequencer`). Then it splits the rows by worker and
sends them, numbered j: workers apply batches in that order. After the last chunk
(J of them), whoever has turn J ends the stream (`FrontEnd.finish`, batch J). So the
workers get K=1's batches, row for row, whatever K.

Pinning: when the state would cost more to pass on than a chunk's work
(`sequencer.heavy`: a fragment flood), its holder keeps it and passes a turn without
it; the owner of the next chunk then forwards that chunk (its columns: the frames
stay in the mapped file) to the holder, who does it whole. The run goes at one
process's pace until the state is light again and travels once more.

The shell (pipeline/decoders.py) turns messages into calls and `io`'s calls into
messages:
    io.token(to, seq, pin, state)    the turn for chunk `seq`: the state, or pin = its holder
    io.forward(to, seq, raw, now)    chunk `seq` as the reader sent it (raw), or the end (raw None)
    io.batch(seq, head, base, batch) chunk `seq`'s rows (`FrontEnd.sequence`'s result; `head`: the
                                     reader's header, None for the end; `base`: ploff's origin)
"""
from .sequencer import export, heavy, light, load

MINE_AHEAD = 2      # own chunks held (decoded, waiting for their turn) before reading more


class RingMember:
    def __init__(self, k: int, K: int, fe, io):
        self.k, self.K, self.fe, self.io = k, K, fe, io
        self.holder = k == 0        # has the state (at the start: process 0, a fresh state)
        self.at = 0                 # when holder: the chunk whose turn it is
        self.pinned = False         # when holder: keeps the state, the others forward their chunks
        self.mine = {}              # own chunks not yet done or forwarded: seq -> [head, chunk, raw, Decoding]
        self.owed = {}              # seq -> the holder to forward that own chunk to, once it is here
        self.total = None           # chunks in the stream, once the reader's end came
        self.end_now = None         # packet time at the end of the stream
        self.turn_done = False      # the end's turn (if this process's) was taken or forwarded
        self.eager = True           # decode own chunks on arrival (not while the state is pinned elsewhere)
        self.frames = 0             # frames of the chunks this process sequenced

    # -- from the reader -------------------------------------------------------
    def room(self) -> bool:
        """Whether the shell may take the next own chunk from the reader."""
        return len(self.mine) < MINE_AHEAD

    def own(self, head: dict, chunk, raw) -> None:
        dec = self.fe.decode(chunk, head["base"]) if self.eager else None
        self.mine[head["seq"]] = [head, chunk, raw, dec]
        self._run()

    def end(self, total: int, now: float) -> None:
        self.total, self.end_now = total, now
        self._run()

    # -- from the other processes ------------------------------------------------
    def token(self, seq: int, pin, state) -> None:
        if pin is None:
            load(self.fe, state)
            self.holder, self.at, self.pinned, self.eager = True, seq, False, True
        else:
            self.owed[seq] = pin
            self.eager = False
        self._run()

    def forwarded(self, head: dict, chunk) -> None:
        """Chunk head["seq"] (or the end, chunk None) of another process: this one holds the
        pinned state and does it whole."""
        seq = head["seq"]
        if not (self.holder and self.pinned and seq == self.at):
            raise RuntimeError(f"front-end {self.k}: chunk {seq} forwarded out of turn (at {self.at})")
        if chunk is None:
            self._finish(head["now"])
        else:
            self._sequence(head, chunk, self.fe.decode(chunk, head["base"]))
        self._pass()
        self._run()

    @property
    def done(self) -> bool:
        """Nothing more for this process to do: it may send its end of stream."""
        return (self.total is not None and not self.mine and not self.owed
                and (not self.holder or self.at > self.total)
                and (self.total % self.K != self.k or self.turn_done))

    # -- the turns ---------------------------------------------------------------
    def _run(self) -> None:
        busy = True
        while busy:
            busy = self._forward_owed()
            if self.holder and self.at % self.K == self.k and (self.total is None or self.at <= self.total):
                j = self.at
                if j in self.mine:
                    head, chunk, _, dec = self.mine.pop(j)
                    self._sequence(head, chunk, dec or self.fe.decode(chunk, head["base"]))
                    self._pass()
                    busy = True
                elif j == self.total:
                    self._finish(self.end_now)
                    self._pass()
                    busy = True

    def _forward_owed(self) -> bool:
        moved = False
        for seq, holder in list(self.owed.items()):
            if seq in self.mine:
                self.io.forward(holder, seq, self.mine.pop(seq)[2], None)
            elif seq == self.total:
                self.io.forward(holder, seq, None, self.end_now)
                self.turn_done = True
            else:
                continue
            del self.owed[seq]
            moved = True
        return moved

    def _sequence(self, head, chunk, dec) -> None:
        self.io.batch(head["seq"], head, dec.data_base, self.fe.sequence(dec, head["now"]))
        self.frames += len(chunk)

    def _finish(self, now: float) -> None:
        self.fe.now = now
        self.io.batch(self.at, None, 0, self.fe.finish())
        if self.at % self.K == self.k:
            self.turn_done = True

    def _pass(self) -> None:
        """After chunk `at`: the turn goes to the next chunk's process, with the state
        unless it is pinned here."""
        self.at += 1
        nxt = self.at % self.K
        if (self.total is not None and self.at > self.total) or nxt == self.k:
            return
        self.pinned = not light(self.fe) if self.pinned else heavy(self.fe)
        if self.pinned:
            self.io.token(nxt, self.at, self.k, None)
        else:
            self.io.token(nxt, self.at, None, export(self.fe))
            self.holder = False
