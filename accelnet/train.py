"""Training: ``Trainer.fit`` with evaluation, history, a progress bar, callbacks, atomic
checkpoints, exact resume and a divergence guard."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .cpu_runtime import FLUSHED
from .data import BatchIterator, Dataset

__all__ = ["Trainer", "Diverged"]


class Diverged(RuntimeError):
    """The loss became NaN or infinite; training stopped before saving anything from that state."""


class Trainer:
    """Trains ``model`` with ``optimizer`` on a :class:`~accelnet.data.Dataset`.

    The loss is read back from the device once every ``log_every`` steps (not every
    step), which is also how often the divergence guard looks. A checkpoint, written
    atomically, holds the parameters, the optimizer state, both RNG states (dropout and
    batch order) and the history, so ``resume`` continues exactly where it stopped.
    """

    def __init__(self, model, optimizer, data: Dataset, batch_size: int = 100, epochs: int = 10,
                 checkpoint: str | os.PathLike | None = None, history_path: str | os.PathLike | None = None,
                 eval_batch_size: int = 1000, train_eval_samples: int | None = 10000, log_every: int = 20,
                 progress: bool = True, callbacks=(), seed: int = 0, max_steps: int | None = None):
        if data.input_shape != model.input_shape:
            raise ValueError(f"the data's samples have shape {data.input_shape} but the model expects "
                             f"{model.input_shape}")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
        for name, x in (("x_train", data.x_train), ("x_test", data.x_test)):
            finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if not finite.all():
                raise ValueError(f"the data's {name} holds NaN or inf, first in sample {int(np.argmin(finite))}: "
                                 f"clean or drop those samples before training")
        if getattr(optimizer, "arena", None) is not model.arena:
            raise ValueError(f"the optimizer ({optimizer!r}) updates another model's parameters: construct it with "
                             f"this model, e.g. {type(optimizer).__name__}(model, lr=...)")
        self.model, self.optimizer, self.data = model, optimizer, data
        self.epochs = epochs
        self.batches = BatchIterator(data.x_train, data.t_train, batch_size, model.backend, model.dtype,
                                     seed=np.random.SeedSequence(seed).spawn(1)[0])
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.history_path = Path(history_path) if history_path else None
        self.eval_batch_size = eval_batch_size
        self.train_eval_samples = train_eval_samples
        self.log_every = max(1, int(log_every))
        self.progress = progress
        self.callbacks = list(callbacks)
        self.max_steps = max_steps
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.history: list[dict] = []
        self.stop = False  # a callback may set this to end training after the current epoch

    # -- state --------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resume needs, on the host."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "model_rng": self.model.rng.bit_generator.state,
            "batch_rng": self.batches.rng.bit_generator.state,
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
        }

    _STATE_KEYS = ("model", "optimizer", "model_rng", "batch_rng", "epoch", "step", "history")

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`: checked completely (keys, the model's and the optimizer's
        state) before anything changes."""
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"the training state lacks {missing}")
        self.model.check_state_dict(state["model"])
        self.optimizer.check_state_dict(state["optimizer"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.model.rng.bit_generator.state = state["model_rng"]
        self.batches.rng.bit_generator.state = state["batch_rng"]
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])

    def resume(self, path=None) -> dict:
        """Continue from a checkpoint (default: this trainer's checkpoint path); returns its meta."""
        ckpt = load_checkpoint(Path(path or self.checkpoint))
        self.load_state(ckpt["state"])
        return ckpt["meta"]

    def save(self, path=None, meta: dict | None = None) -> None:
        """Write a checkpoint atomically (temp file, fsync, rename)."""
        save_checkpoint(Path(path or self.checkpoint), self.state(), meta)

    # -- running --------------------------------------------------------------------------
    def evaluate(self, x, t, limit: int | None = None) -> float:
        if limit is not None and len(x) > limit:
            x, t = x[:limit], t[:limit]
        return self.model.accuracy(x, t, self.eval_batch_size)

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

    def _check_finite(self, loss_sum, steps: int) -> float:
        mean = float(loss_sum) / steps
        if not math.isfinite(mean):
            raise Diverged(
                f"loss became {mean} at step {self.step} (epoch {self.epoch + 1}): training stopped; "
                + (f"the last good checkpoint, {self.checkpoint}, is untouched" if self.checkpoint and
                   self.checkpoint.exists() else "no checkpoint was written from the diverged state")
                + ". Try a smaller --lr.")
        return mean

    def fit(self, meta: dict | None = None) -> list[dict]:
        """Train until ``epochs`` epochs are complete (counting any resumed ones); returns the history."""

        # The divergence guard reports a NaN/Inf loss itself; NumPy's overflow warnings would only
        # bury its message.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), FLUSHED:
            return self._fit(meta)

    def _fit(self, meta):
        from tqdm.auto import tqdm

        model, opt = self.model, self.optimizer
        xp = model.backend.xp
        d = self.data
        while self.epoch < self.epochs and not self.stop:
            model.train()
            t0 = time.perf_counter()
            loss_sum, loss_steps, interval_sum, interval_steps = 0.0, 0, xp.zeros((), model.dtype), 0
            samples = 0
            bar = tqdm(total=len(self.batches), desc=f"epoch {self.epoch + 1}/{self.epochs}", unit="batch",
                       disable=not self.progress, leave=False, dynamic_ncols=True)
            try:
                for x, t in self.batches:
                    loss = model.loss(x, t)
                    model.backward()
                    opt.step()
                    self.step += 1
                    samples += len(x)
                    interval_sum = interval_sum + loss
                    interval_steps += 1
                    if interval_steps == self.log_every:
                        mean = self._check_finite(interval_sum, interval_steps)  # one device->host read
                        loss_sum += mean * interval_steps
                        loss_steps += interval_steps
                        interval_sum, interval_steps = xp.zeros((), model.dtype), 0
                        bar.set_postfix(loss=f"{mean:.4f}")
                    bar.update(1)
                    if self.max_steps is not None and self.step >= self.max_steps:
                        self.stop = True
                        break
                if interval_steps:
                    mean = self._check_finite(interval_sum, interval_steps)
                    loss_sum += mean * interval_steps
                    loss_steps += interval_steps
            finally:
                bar.close()
            model.backend.synchronize()
            seconds = time.perf_counter() - t0
            self.epoch += 1
            opt.epoch_end()
            bad = self._non_finite_state()
            if bad:
                raise Diverged(f"{', '.join(bad)} became non-finite in epoch {self.epoch}: training stopped before "
                               f"saving them" + (f"; the last good checkpoint, {self.checkpoint}, is untouched"
                                                 if self.checkpoint and self.checkpoint.exists() else ""))
            record = {
                "epoch": self.epoch,
                "step": self.step,
                "loss": loss_sum / max(loss_steps, 1),
                "train_acc": self.evaluate(d.x_train, d.t_train, self.train_eval_samples),
                "test_acc": self.evaluate(d.x_test, d.t_test),
                "seconds": seconds,
                "samples_per_s": samples / seconds if seconds > 0 else float("nan"),
                "lr": opt.lr,
            }
            self.history.append(record)
            if self.checkpoint:
                self.save(meta=meta)
            if self.history_path:
                with open(self.history_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            for cb in self.callbacks:
                cb(self, record)
        return self.history
