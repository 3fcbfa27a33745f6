"""Training: ``Trainer.fit`` with evaluation, history, a progress bar, callbacks, atomic
checkpoints, exact resume after any stop, checks before the first step, a divergence guard,
and data-parallel training over a communicator (``distributed.py``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from .checkpoint import (CheckpointError, describe_checkpoint, load_checkpoint, remove_stale_temp_files,
                         save_checkpoint)
from .backend import host_rng
from .cpu_runtime import FLUSHED
from .data import BatchIterator, Dataset
from .distributed import LOCAL, DistributedError, ReplicaMismatch, checksum, on_all_ranks
from .layers import BatchNorm
from .outputs import OutputError, OutputLock, probe_writable
from .saved_model import recorded_architecture
from .validate import positive_int

__all__ = ["Trainer", "Diverged", "Interrupted", "InsufficientMemory"]


class Diverged(RuntimeError):
    """The loss became NaN or infinite; training stopped before saving anything from that state."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a whole step; the checkpoint holds that step."""


class InsufficientMemory(MemoryError):
    """The run's estimated memory exceeds what the device has available (checked before step 1)."""


class Trainer:
    """Trains ``model`` with ``optimizer`` on a :class:`~accelnet.data.Dataset`.

    The loss is read back from the device once every ``log_every`` steps (not every step), which
    is also how often the divergence guard looks. A checkpoint, written atomically, holds the
    parameters, the optimizer state, both RNG states, the position inside the epoch and the
    history, so a run stopped anywhere (``max_steps``, Ctrl-C, SIGTERM, a kill between epochs)
    continues bitwise as if uninterrupted. The checkpoint and history files belong to one run:
    an existing one is continued only after :meth:`resume`, replaced only with ``overwrite``,
    and locked while ``fit`` runs.

    Data-parallel with ``comm`` (:func:`accelnet.distributed.init`), every rank runs the same
    Trainer: ``batch_size`` is the global batch, each rank computes the gradient of its shard,
    one all-reduce of the flat gradient buffer sums them (weighted by shard size: the global
    batch's mean gradient), and every rank takes the same optimizer step. Parameters are
    broadcast from rank 0 when ``fit`` starts and compared by checksum at every epoch end (and
    every ``check_every`` steps). Evaluation is sharded; rank 0 alone writes the checkpoint and
    history and shows progress. ``fit``, ``evaluate``, ``save``, ``resume`` and
    ``check_replicas`` are collective: call them on every rank.

    ``augment`` (e.g. :class:`~accelnet.augment.RandomShift`) transforms each training batch on
    the device, drawing from a stream keyed by the seed and the step; accuracies are measured
    every ``eval_every`` epochs (None in the other epochs' records) and wherever the run stops.
    """

    def __init__(self, model, optimizer, data: Dataset, batch_size: int = 100, epochs: int = 10,
                 checkpoint: str | os.PathLike | None = None, history_path: str | os.PathLike | None = None,
                 eval_batch_size: int = 1000, train_eval_samples: int | None = 10000, log_every: int = 20,
                 progress: bool = True, callbacks=(), seed: int = 0, max_steps: int | None = None,
                 overwrite: bool = False, comm=None, sync_batchnorm: bool = False, check_every: int | None = None,
                 augment=None, eval_every: int = 1):
        if data.input_shape != model.input_shape:
            raise ValueError(f"the data's samples have shape {data.input_shape} but the model expects "
                             f"{model.input_shape}")
        positive_int(epochs, "epochs")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
        if getattr(optimizer, "arena", None) is not model.arena:
            raise ValueError(f"the optimizer ({optimizer!r}) updates another model's parameters: construct it with "
                             f"this model, e.g. {type(optimizer).__name__}(model, lr=...)")
        self.comm = LOCAL if comm is None else comm
        # data-parallel steps (a real communicator, even of one rank: the same calls, a real check)
        self.parallel = self.comm.engine != "local"
        if self.comm.device is not None and self.comm.device != model.backend.name:
            raise ValueError(f"the communicator ({self.comm!r}) reduces {self.comm.device} arrays but the model is on "
                             f"the {model.backend.name}: initialize it with distributed.init('{model.backend.name}')")
        if check_every is not None:
            positive_int(check_every, "check_every")
        if augment is not None:
            augment.check(model.input_shape)
        self.augment = augment
        self.eval_every = positive_int(eval_every, "eval_every")
        self.model, self.optimizer, self.data = model, optimizer, data
        self.epochs = epochs
        self.seed = seed
        self.batches = BatchIterator(data.x_train, data.t_train, batch_size, model.backend, model.dtype,
                                     seed=np.random.SeedSequence(seed).spawn(1)[0], rank=self.comm.rank,
                                     world=self.comm.size)
        if sync_batchnorm and not any(isinstance(layer, BatchNorm) for layer in model.layers):
            raise ValueError("sync_batchnorm (--sync-batchnorm) applies to models with BatchNorm layers "
                             "(e.g. multi_layer_net --batchnorm); this model has none")
        self.sync_batchnorm = bool(sync_batchnorm)
        self.check_every = check_every

        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.history_path = Path(history_path) if history_path else None
        self.overwrite = bool(overwrite)
        self.eval_batch_size = eval_batch_size
        self.train_eval_samples = train_eval_samples
        self.log_every = max(1, int(log_every))
        self.progress = progress and self.comm.rank == 0
        self.callbacks = list(callbacks)
        self.max_steps = max_steps
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.history: list[dict] = []
        self.stop = False  # a callback may set this to end training after the current epoch
        self.run_id = uuid.uuid4().hex[:12]  # kept by resumed runs: one id per training run
        self._progress: dict | None = None  # the epoch in progress: its loss sums, samples, seconds
        self._own_checkpoint: Path | None = None  # the checkpoint this run resumed from or wrote
        self._signal: int | str | None = None
        if self.parallel:
            self._rank_rng()  # dropout masks differ by rank
            for layer in model.layers:
                if isinstance(layer, BatchNorm):
                    layer.comm = self.comm if self.sync_batchnorm else None

    def _rank_rng(self) -> None:
        """Give this rank's dropout its own stream, from the seed, the rank and the step."""
        seq = np.random.SeedSequence(self.seed, spawn_key=(1, self.comm.rank, self.step))
        self.model.rng.bit_generator.state = host_rng(seq).bit_generator.state

    # -- state --------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resume needs, on the host. Data-parallel (collective), the model's
        BatchNorm statistics are the ranks' average, and ``ranks`` holds each rank's own (with its
        dropout RNG and its part of an open loss interval), for an exact resume."""
        batches = self.batches.state()
        with self._replica_buffers():
            model_state = self.model.state_dict()
        state = {
            "model": model_state,
            "optimizer": self.optimizer.state_dict(),
            "model_rng": self.model.rng.bit_generator.state,
            "batch_rng": batches["rng"],
            "position": batches["position"],
            "progress": self._progress if batches["position"] else None,
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "run_id": self.run_id,
            "world_size": self.comm.size,
        }
        if self.parallel:
            interval = state["progress"]["interval_sum"] if state["progress"] else 0.0  # this rank's part
            own = {"model_rng": state["model_rng"], "interval_sum": interval,
                   "buffers": {k: self.model.backend.to_numpy(v).copy() for k, v in self.model.buffers().items()}}
            state["ranks"] = self.comm.allgather_obj(own)
        return state

    _STATE_KEYS = ("model", "optimizer", "model_rng", "batch_rng", "epoch", "step", "history")
    _PROGRESS_KEYS = ("loss_sum", "loss_steps", "interval_sum", "interval_steps", "samples", "seconds")

    @staticmethod
    def _batch_state(state: dict) -> dict:
        """The batch iterator's part of a training state (checkpoints before mid-epoch resume have
        no position: they stopped between epochs)."""
        return {"rng": state["batch_rng"], "position": state.get("position", 0)}

    def _check_position(self, state: dict) -> None:
        self.batches.check_state(self._batch_state(state))
        position, progress = state.get("position", 0), state.get("progress")
        if position and (not isinstance(progress, dict) or any(k not in progress for k in self._PROGRESS_KEYS)):
            raise ValueError(f"the training state stops inside an epoch (batch {position}) but lacks that "
                             f"epoch's progress {list(self._PROGRESS_KEYS)}")

    def load_state(self, state: dict) -> str | None:
        """Restore :meth:`state`: checked completely (keys, the model's and the optimizer's state,
        the position in the epoch) before anything changes. Returns a note when the state was
        saved by another number of ranks (the run continues, its sums in another order)."""
        if not isinstance(state, dict):
            raise ValueError(f"the training state must be a dict, got {type(state).__name__}")
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"the training state lacks {missing}")
        self.model.check_state_dict(state["model"])
        self.optimizer.check_state_dict(state["optimizer"])
        self._check_position(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.model.rng.bit_generator.state = state["model_rng"]
        self.batches.set_state(self._batch_state(state))
        self._progress = dict(state["progress"]) if state.get("position") else None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.run_id = str(state.get("run_id") or self.run_id)
        return self._load_rank_state(state)

    def _load_rank_state(self, state: dict) -> str | None:
        """This rank's own part of ``state``: the same rank's when the world size is the one that
        saved it; else the model's averaged statistics, a fresh dropout stream and the open loss
        interval counted once (on rank 0)."""
        saved, world, rank = int(state.get("world_size", 1)), self.comm.size, self.comm.rank
        ranks = state.get("ranks")
        if saved == world and ranks:
            own = ranks[rank]
            self.model.rng.bit_generator.state = own["model_rng"]
            for k, v in self.model.buffers().items():
                v[...] = self.model.backend.to_device(own["buffers"][k], self.model.dtype)
            interval = float(own["interval_sum"])
        elif rank > 0:
            self._rank_rng()
            interval = 0.0  # the open interval's loss is counted once, by rank 0
        else:
            interval = sum(float(r["interval_sum"]) for r in ranks) if ranks else None
        if self._progress is not None and interval is not None:
            self._progress["interval_sum"] = interval
        if saved == world:
            return None
        return (f"resumed on {world} rank{'s' if world > 1 else ''} from a checkpoint written by {saved}: the global "
                f"batch and its order are the same, but gradients and losses are summed in another order (and "
                f"dropout draws differ), so the run is not bitwise the one {saved} rank{'s' if saved > 1 else ''} "
                f"would have continued")

    def resume(self, path=None) -> dict:
        """Continue from a checkpoint (default: this trainer's checkpoint path); returns its meta.
        Data-parallel, rank 0 reads it and every rank loads it; a change in the number of ranks
        is a warning (see :meth:`load_state`)."""
        path = Path(path or self.checkpoint)
        ckpt = self.comm.on_root(lambda: load_checkpoint(path))
        note = self.comm.collectively(lambda: self.load_state(ckpt["state"]))
        if note and self.comm.rank == 0:
            warnings.warn(note, stacklevel=2)
        self._own_checkpoint = path.resolve()
        return ckpt["meta"]

    def save(self, path=None, meta: dict | None = None) -> None:
        """Write a checkpoint atomically (temp file, fsync, rename); data-parallel, rank 0 writes."""
        path = Path(path or self.checkpoint)
        state = self.state()
        meta = {**(meta or {}), "architecture": recorded_architecture(self.model)}
        self.comm.on_root(lambda: save_checkpoint(path, state, meta))
        self._own_checkpoint = path.resolve()

    @contextlib.contextmanager
    def _replica_buffers(self):
        """Data-parallel with per-rank BatchNorm statistics: inside, every rank holds the ranks'
        average (the model that is evaluated and saved); each rank's own come back after. The
        average of the ranks' running means is the running mean of the ranks' averages, so this
        is what keeping them in sync every step would give."""
        buffers = list(self.model.buffers().values())
        if self.comm.size == 1 or self.sync_batchnorm or not buffers:
            yield
            return
        xp = self.model.backend.xp
        own = [b.copy() for b in buffers]
        flat = self.comm.allreduce(xp.concatenate([b.ravel() for b in buffers]))
        flat /= self.comm.size
        offset = 0
        for b in buffers:
            b[...] = flat[offset : offset + b.size].reshape(b.shape)
            offset += b.size
        try:
            yield
        finally:
            for b, o in zip(buffers, own):
                b[...] = o

    @property
    def finished(self) -> bool:
        """Whether the run has reached its end (``epochs``, or ``max_steps``)."""
        return self.epoch >= self.epochs or (self.max_steps is not None and self.step >= self.max_steps)

    # -- before the first step ---------------------------------------------------------
    @contextlib.contextmanager
    def _owned_outputs(self):
        """Prove the output folders writable, lock the checkpoint and history for this run, and
        refuse to replace what another run wrote unless ``overwrite``."""
        locks = []
        try:
            # data-parallel, rank 0 alone writes; the others learn its outcome
            self.comm.collectively(lambda: self._claim_outputs(locks) if self.comm.rank == 0 else None)
            yield
        finally:
            for lock in reversed(locks):
                lock.release()

    def _claim_outputs(self, locks: list) -> None:
        if self.checkpoint:
            probe_writable(self.checkpoint, "checkpoint")
            locks.append(OutputLock(self.checkpoint, self.run_id, "checkpoint").acquire())
            self._check_checkpoint_owner()
            remove_stale_temp_files(self.checkpoint)  # debris of writers killed mid-save
        if self.history_path:
            probe_writable(self.history_path, "history")
            locks.append(OutputLock(self.history_path, self.run_id, "history").acquire())
            self._check_history_owner()

    def _check_checkpoint_owner(self) -> None:
        path = self.checkpoint
        if not path.exists():
            return
        try:
            found = describe_checkpoint(path)
        except CheckpointError as exc:
            raise OutputError(f"checkpoint {path} exists and is not an accelnet checkpoint ({exc}): refusing to "
                              f"replace it; choose another path") from None
        if self._own_checkpoint != path.resolve() and not self.overwrite:
            raise OutputError(f"checkpoint {path} already holds a run ({found}): continue it with --resume "
                              f"(Trainer.resume) or replace it with --overwrite (overwrite=True)")

    def _check_history_owner(self) -> None:
        path = self.history_path
        if not path.exists() or path.stat().st_size == 0:
            return
        runs = set()
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    runs.add(json.loads(line).get("run"))
                except (ValueError, AttributeError):
                    runs.add(None)
        if runs == {self.run_id}:
            return  # this run's own (resumed, or fit again): it goes on appending
        if self.overwrite:
            path.write_text("")
            return
        named = ", ".join(sorted(r for r in runs if r)) or "no run id"
        raise OutputError(f"history {path} holds another run's records ({named}): a history belongs to one "
                          f"run; choose another file, or replace it with --overwrite (overwrite=True)")

    def _memory_need(self):
        """``need(batch_size)``: bytes the run needs on its device at that batch size, the larger of
        a training step and an evaluation pass, plus optimizer state not yet allocated (the last
        two measured once, here)."""
        model = self.model
        evaluation = model.step_bytes(min(self.eval_batch_size, len(self.data.x_test)), train=False)
        state = 0 if self.optimizer._flat_state else len(self.optimizer.state_names) * model.arena.data.nbytes
        return lambda batch_size: max(model.step_bytes(batch_size), evaluation) + state

    def memory_estimate(self, batch_size: int | None = None) -> int:
        """Bytes the run still needs on its device at ``batch_size`` (default: this run's; per
        rank, data-parallel)."""
        return self._memory_need()(batch_size or self.batches.batch_size // self.comm.size)

    _MARGIN = 1.2  # allocator overhead and what the measurement cannot see

    def _check_memory(self) -> None:
        available = self.model.backend.available_bytes()
        if available is None:
            return
        b = self.batches.batch_size // self.comm.size  # this rank's shard
        need = self._memory_need()
        at_b = need(b)
        if at_b * self._MARGIN <= available:
            return
        at_1 = need(1)
        fits = self._largest_batch_that_fits(need, available, b, at_b, at_1)
        world = self.comm.size
        hint = (f"batch size {fits * world} or less fits" if fits else
                "no batch size fits: free memory or use a smaller model")
        shard = f" ({b} per rank)" if world > 1 else ""
        raise InsufficientMemory(f"batch size {b * world}{shard} needs about {at_b / 2**30:.2f} GiB on the "
                                 f"{self.model.backend.name} "
                                 f"({(at_b - at_1) / max(b - 1, 1) / 2**20:.2f} MiB per sample), "
                                 f"{available / 2**30:.2f} GiB is available: {hint}")

    def _largest_batch_that_fits(self, need, available: int, batch: int, at_batch: int, at_1: int) -> int:
        """A batch size whose ``need`` fits ``available`` (0 if not even 1 does): the linear guess
        from the needs at 1 and ``batch``, then checked and shrunk until its own need fits."""
        if at_1 * self._MARGIN > available:
            return 0
        per_sample = max((at_batch - at_1) / max(batch - 1, 1), 1.0)
        guess = min(batch - 1, 1 + int((available / self._MARGIN - at_1) / per_sample))
        while guess > 1 and need(guess) * self._MARGIN > available:
            guess = int(guess * 0.9)
        return max(guess, 1)

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM end training after the step in progress (checkpoint written, then
        :class:`Interrupted`); a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signum

        self._signal = None
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # -- running --------------------------------------------------------------------------
    def evaluate(self, x, t, limit: int | None = None) -> float:
        """Accuracy of the model on ``x``, ``t`` (the first ``limit`` samples if given).
        Data-parallel, each rank predicts its contiguous shard and the counts are summed."""
        if limit is not None:
            positive_int(limit, "evaluate: limit")
        if limit is not None and len(x) > limit:
            x, t = x[:limit], t[:limit]
        model, world = self.model, self.comm.size
        if not self.parallel:
            return model.accuracy(x, t, self.eval_batch_size)
        model._check_input(x, self.eval_batch_size, "evaluate")  # the same answer on every rank
        t = model.class_indices(t, len(x), "evaluate")
        bounds = np.linspace(0, len(x), world + 1).astype(int)
        lo, hi = bounds[self.comm.rank], bounds[self.comm.rank + 1]
        with self._replica_buffers():
            correct = model.count_correct(x[lo:hi], t[lo:hi], self.eval_batch_size) if hi > lo else 0
        return float(self.comm.allreduce_host(np.array([correct]))[0]) / len(x)

    def check_replicas(self) -> None:
        """Collective: raise :class:`ReplicaMismatch` on every rank unless every rank holds the
        same parameters and optimizer state, bit for bit (a no-op in one process)."""
        if self.parallel:
            self._agree_at(f"at step {self.step}")

    def _agree_at(self, where: str) -> bool:
        """Collective check of the replicas: the non-finite state of any rank is a divergence on
        all, differing checksums a :class:`ReplicaMismatch`; returns whether any rank was signalled
        to stop."""
        flat = self.optimizer._flat_state or {}
        signalled = self._signal is not None
        mine = (self._non_finite_state(), checksum([self.model.arena.data, *flat.values()]), signalled)
        views = self.comm.allgather_obj(mine)
        bad = sorted({name for b, _, _ in views for name in b})
        if bad:
            raise on_all_ranks(self._diverged(f"{', '.join(bad)} became non-finite {where} (not saved)"))
        sums = [c for _, c, _ in views]
        if len(set(sums)) > 1:
            differ = [r for r, c in enumerate(sums) if c != sums[0]]
            raise on_all_ranks(ReplicaMismatch(
                f"the replicas differ {where}: rank{'s' if len(differ) > 1 else ''} "
                f"{', '.join(map(str, differ))} hold{'s' if len(differ) == 1 else ''} other parameters or optimizer "
                f"state than rank 0 (checksums {', '.join(f'{c:08x}' for c in sums)}); a rank computed another "
                f"update: not saved, stopping"))
        if any(s for _, _, s in views):
            self._signal = self._signal if signalled else "to another rank"
            return True
        return False

    def _non_finite_state(self) -> list[str]:
        """Names of the parameters, buffers (BatchNorm statistics) and optimizer state holding NaN
        or inf; one reduction over the flat arena in the usual case that it is finite."""
        model, backend = self.model, self.model.backend
        bad = []
        if not math.isfinite(backend.kernels.sum_squares(model.arena.data)):
            bad += [k for k, v in model.params.items() if not bool(backend.xp.isfinite(v).all())]
        bad += [k for k, v in model.buffers().items() if not bool(backend.xp.isfinite(v).all())]
        flat = self.optimizer._flat_state or {}
        bad += [f"optimizer state {k}" for k, v in flat.items() if not math.isfinite(backend.kernels.sum_squares(v))]
        return bad

    def _advice(self) -> str:
        """What to change after a divergence: the data's scale when it is far from [0, 1] (the
        inputs then overflow whatever the lr), else the learning rate."""
        x = self.data.x_train
        scale = float(np.abs(x).max()) if x.size else 0.0
        if scale > 1e4:
            return f"the training data reaches |x| = {scale:.3g}: scale it to about [0, 1] (e.g. images / 255)"
        return f"try a smaller learning rate (--lr; now {self.optimizer.lr:g})"

    def _untouched(self) -> str:
        if self.checkpoint and self.checkpoint.exists():
            return f"the last good checkpoint, {self.checkpoint}, is untouched"
        return "no checkpoint was written from the diverged state"

    def _diverged(self, what: str) -> Diverged:
        advice = self._advice()
        return Diverged(f"{what}: training stopped; {self._untouched()}. {advice[0].upper()}{advice[1:]}.")

    def _interval_mean(self, interval, steps: int) -> tuple[float, bool]:
        """The mean loss of the last ``steps`` steps (one device-to-host read; data-parallel, one
        host all-reduce that also carries each rank's stop request) and whether any rank was
        signalled to stop. A non-finite mean is a divergence, on every rank."""
        value, signalled = float(interval), self._signal is not None
        if self.parallel:
            value, votes = map(float, self.comm.allreduce_host(np.array([value, float(signalled)])))
            signalled = votes > 0
            if signalled and self._signal is None:
                self._signal = "to another rank"
        mean = value / steps
        if not math.isfinite(mean):
            raise on_all_ranks(self._diverged(f"loss became {mean} at step {self.step} (epoch {self.epoch + 1})"))
        return mean, signalled

    def _check_state(self, where: str) -> bool:
        """Before a checkpoint: every parameter, buffer and optimizer state finite; data-parallel,
        also the replicas equal (:meth:`_agree_at`). Returns whether to stop for a signal (any
        rank's, data-parallel)."""
        if self.parallel:
            return self._agree_at(where)
        bad = self._non_finite_state()
        if bad:
            raise self._diverged(f"{', '.join(bad)} became non-finite {where} (not saved)")
        return self._signal is not None

    def check_same_run(self, meta: dict | None = None) -> None:
        """Collective: every rank was started with the same run (model, optimizer, data, batch,
        seeds, position, ``meta``'s config), else an error on all ranks naming what differs
        (``fit`` checks it before the first step; a no-op in one process)."""
        if not self.parallel:
            return
        model, d, b = self.model, self.data, self.batches
        mine = {"accelnet version": __import__("accelnet").__version__, "backend": model.backend.name,
                "model": " -> ".join(repr(layer) for layer in model.layers), "input shape": model.input_shape,
                "dtype": model.dtype.name, "parameters": model.num_params, "optimizer": repr(self.optimizer),
                "global batch size": b.batch_size, "epochs": self.epochs, "max steps": self.max_steps,
                "seed": self.seed, "dataset": f"{d.name} ({len(d.x_train)} train, {len(d.x_test)} test)",
                "training data checksum": checksum([d.x_train, d.t_train]), "sync batchnorm": self.sync_batchnorm,
                "check every": self.check_every, "log every": self.log_every, "eval batch size": self.eval_batch_size,
                "train eval samples": self.train_eval_samples, "resumed at": (self.epoch, self.step, b.position)}
        for k, v in ((meta or {}).get("config") or {}).items():
            mine[f"--{k.replace('_', '-')}"] = v
        runs = self.comm.allgather_obj(mine)
        short = lambda v: (s if len(s := str(v)) <= 60 else s[:57] + "...")  # noqa: E731
        diffs = [f"rank {r} has {k} {short(run.get(k))} where rank 0 has {short(runs[0].get(k))}"
                 for r, run in enumerate(runs[1:], 1) for k in sorted(set(run) | set(runs[0]))
                 if run.get(k) != runs[0].get(k)]
        if diffs:
            more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
            raise on_all_ranks(DistributedError(f"the ranks were started with different runs: {'; '.join(diffs[:4])}"
                                                f"{more}; start every rank with the same command"))

    def _start_replicas(self, meta) -> None:
        """Data-parallel start: one run id, the same run on every rank, rank 0's parameters and
        optimizer state everywhere."""
        self.run_id = self.comm.bcast_obj(self.run_id)
        self.check_same_run(meta)
        self.comm.broadcast(self.model.arena.data)
        for v in (self.optimizer._flat_state or {}).values():
            self.comm.broadcast(v)

    def fit(self, meta: dict | None = None) -> list[dict]:
        """Train until ``epochs`` epochs (or ``max_steps`` steps) are complete, counting resumed ones;
        returns the history. Before the first step: outputs proven writable and locked, memory
        estimated (and, data-parallel, the ranks' runs compared and the parameters broadcast)."""
        if self.parallel:
            self._start_replicas(meta)
        # The divergence guard reports a NaN/Inf loss itself; NumPy's overflow warnings would only
        # bury its message.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), FLUSHED, self._owned_outputs():
            if not self.finished:
                self.comm.collectively(self._check_memory)
            with self._stop_on_signals():
                return self._fit(meta)

    def _record(self, p: dict, partial: bool) -> dict:
        d, opt = self.data, self.optimizer
        # every eval_every epochs, and always where the run stops
        evaluated = partial or self.epoch % self.eval_every == 0 or self.finished or self.stop
        record = {
            "epoch": self.epoch + (1 if partial else 0),
            "step": self.step,
            "loss": p["loss_sum"] / max(p["loss_steps"], 1),
            "train_acc": self.evaluate(d.x_train, d.t_train, self.train_eval_samples) if evaluated else None,
            "test_acc": self.evaluate(d.x_test, d.t_test) if evaluated else None,
            "seconds": p["seconds"],
            "samples_per_s": p["samples"] / p["seconds"] if p["seconds"] > 0 else float("nan"),
            "lr": opt.lr,
            "run": self.run_id,
        }
        if partial:
            record["partial"] = True  # the run stopped inside this epoch, after record["step"] steps
        return record

    def _publish(self, record: dict | None, meta) -> None:
        """Checkpoint the state (with ``record`` in its history), then append ``record`` to the
        history file and show it to the callbacks (on every rank; a stop any of them asks for
        stops all)."""
        if record is not None:
            self.history.append(record)
        if self.checkpoint:
            self.save(meta=meta)
        if record is None:
            return
        if self.history_path:
            def append():
                with open(self.history_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.comm.on_root(append)
        for cb in self.callbacks:
            cb(self, record)
        if self.parallel:
            self.stop = any(self.comm.allgather_obj(bool(self.stop)))

    def _fit(self, meta):
        from tqdm.auto import tqdm

        model, opt, comm = self.model, self.optimizer, self.comm
        xp = model.backend.xp
        while not self.finished and not self.stop:
            model.train()
            t0 = time.perf_counter()
            p = self._progress = self._progress or dict.fromkeys(self._PROGRESS_KEYS, 0)
            interval = xp.asarray(p["interval_sum"], dtype=model.dtype)
            stopped = False
            bar = tqdm(total=len(self.batches), initial=self.batches.position, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                       unit="batch", disable=not self.progress, leave=False, dynamic_ncols=True)
            try:
                for x, t in self.batches:
                    if self.augment is not None:
                        x = self._augmented(x)
                    loss = model.loss(x, t)
                    if not self.parallel:
                        model.backward()
                    else:  # this shard's part of the global batch's mean gradient, then the sum over ranks
                        weight = len(x) / self.batches.batch_samples
                        model.backward(model.loss_fn.backward(weight))
                        comm.allreduce(model.arena.grad)
                        loss = loss * weight
                    opt.step()
                    self.step += 1
                    p["samples"] += self.batches.batch_samples
                    interval = interval + loss
                    p["interval_steps"] += 1
                    signalled = self._signal is not None and not self.parallel
                    if p["interval_steps"] == self.log_every:
                        mean, signalled = self._interval_mean(interval, p["interval_steps"])
                        p["loss_sum"] += mean * p["interval_steps"]
                        p["loss_steps"] += p["interval_steps"]
                        interval, p["interval_steps"] = xp.zeros((), model.dtype), 0
                        bar.set_postfix(loss=f"{mean:.4f}")
                    if self.check_every and self.step % self.check_every == 0:
                        self.check_replicas()
                    bar.update(1)
                    if signalled or (self.max_steps is not None and self.step >= self.max_steps):
                        stopped = True
                        break
            finally:
                bar.close()
            model.backend.synchronize()
            p["seconds"] += time.perf_counter() - t0
            mid_epoch = stopped and 0 < self.batches.position < len(self.batches)
            if mid_epoch:
                flushed = self._flush_interval(p, interval)  # checks the open interval's loss
                # exact: a float32 or float64 value in a Python float (data-parallel, this rank's part)
                p["interval_sum"] = float(interval)
                if self._check_state(f"by step {self.step}"):
                    self._publish(None, meta)
                    raise self._interrupted("")
                self._publish(self._record(flushed, partial=True), meta)
                return self.history
            p = self._flush_interval(p, interval)
            self.epoch += 1
            opt.epoch_end()
            signalled = self._check_state(f"in epoch {self.epoch}")
            record = self._record(p, partial=False)
            self._progress = None
            self._publish(record, meta)
            if signalled or (not self.parallel and self._signal is not None):
                raise self._interrupted(f" (end of epoch {self.epoch})")
        return self.history

    def _augmented(self, x):
        """``x`` augmented with the draws of this step's global batch (this rank's part of them),
        from a stream keyed by the seed and the step: a resumed or data-parallel run draws the
        same as one uninterrupted process."""
        rng = host_rng(np.random.SeedSequence(self.seed, spawn_key=(2, self.step)))
        draws = self.augment.draw(rng, self.batches.batch_samples)
        if self.comm.size > 1:
            draws = np.array_split(draws, self.comm.size, axis=-1)[self.comm.rank]
        return self.augment(x, draws, self.model.backend)

    def _interrupted(self, where: str) -> Interrupted:
        what = f"signal {self._signal}" if isinstance(self._signal, int) else f"a signal {self._signal}"
        return on_all_ranks(Interrupted(f"stopped by {what} after step {self.step}{where}"
                                        + (f"; checkpoint {self.checkpoint} holds it: continue with --resume"
                                           if self.checkpoint else "")))

    def _flush_interval(self, p: dict, interval) -> dict:
        """``p`` with the loss interval in progress counted into the epoch's loss (for a record);
        ``p`` itself keeps the open interval, so a resumed run sums exactly as an uninterrupted one."""
        if not p["interval_steps"]:
            return p
        mean, _ = self._interval_mean(interval, p["interval_steps"])
        return {**p, "loss_sum": p["loss_sum"] + mean * p["interval_steps"],
                "loss_steps": p["loss_steps"] + p["interval_steps"]}
