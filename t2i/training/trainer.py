"""The one training loop: every t2i model trains through `Trainer`, from one CPU to many GPUs.

The trainer knows no model family. It calls `model.training_losses(batch) -> dict` (a "loss"
key plus logged terms) and, when the model has it, `model.log_images(batch, generator)` for
sample grids. Around that: Accelerate for devices, mixed precision (bf16 on CUDA, fp32 on
CPU), gradient accumulation and checkpoints; AdamW with warmup + cosine; optional EMA
weights (diffusers' EMAModel); a tqdm bar; CSV (and TensorBoard) logs; `resume="latest"`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    DistributedType,
    ProjectConfiguration,
    send_to_device,
)
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torchvision.utils import save_image
from tqdm.auto import tqdm

from t2i.config import TrainConfig
from t2i.training.checkpoints import load_checkpoint, resolve_resume, save_checkpoint
from t2i.training.devices import cpu_processes, enable_cpu_fsdp, resolve_mixed_precision
from t2i.training.tracking import default_trackers, plot_losses, read_metrics

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised after `max_nonfinite_steps` optimizer updates in a row had a non-finite loss."""


@dataclasses.dataclass
class TrainResult:
    """What a finished run leaves behind.

    Args:
        step: optimizer updates done.
        metrics: the last logged metrics.
        skipped_steps: updates skipped because the loss was not finite.
        model_dir: the saved final model (`from_pretrained` loads it), or None if not main.
    """

    step: int
    metrics: dict[str, float]
    skipped_steps: int
    model_dir: Path | None


class _LossModule(torch.nn.Module):
    """Routes `training_losses` (or, under FSDP, any model method the loop calls) through
    `forward`, so DDP's and FSDP's hooks see it; FSDP's units are the model's
    `_no_split_modules` (diffusers' convention)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._no_split_modules = getattr(model, "_no_split_modules", None)

    def forward(
        self, batch: dict[str, Any], method: str = "training_losses", **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        return getattr(self.model, method)(batch, **kwargs)


class Trainer:
    """Trains `model` on `train_dataset` as `config` says.

    Args:
        model: a t2i model (`training_losses(batch)`; optionally `log_images`, `save_pretrained`).
        config: the training settings.
        train_dataset: yields samples that `collate_fn` turns into a batch dict.
        collate_fn: builds a batch dict from a list of samples.
        sample_dataset: samples for the periodic image grids (the first `num_samples`).
        num_workers: DataLoader worker processes.
        decode_tokens: turns everything `log_images` gives (code grids of a prior over a
            tokenizer's codes, or an autoencoder's latents) into images (N, 3, H, W) in
            [-1, 1]; None: `log_images` gives images.
        batch_transform: adds to each batch, on its device and without gradients, what a
            frozen model computes from it (a prior's CLIP text states).
        score_samples: scores the sample grid's "samples" images against their batch (the
            shapes judge's prompt fidelity, say); its figures are logged with the step's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        train_dataset: Dataset,
        collate_fn: Callable[[list], dict] | None = None,
        sample_dataset: Dataset | None = None,
        num_workers: int = 0,
        decode_tokens: Callable[[Any], torch.Tensor] | None = None,
        batch_transform: Callable[[dict], dict] | None = None,
        score_samples: Callable[[torch.Tensor, dict], dict[str, float]] | None = None,
    ) -> None:
        self.config = config
        self.decode_tokens = decode_tokens
        self.batch_transform = batch_transform
        self.score_samples = score_samples
        self.out = Path(config.output_dir)
        self.accelerator = self._accelerator(model)
        self.fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        if self.fsdp and getattr(model, "lora_record", None) is not None:  # adapters on
            raise ValueError(
                "LoRA adapters do not train under FSDP in t2i (their base would be sharded "
                "with them); launch with configs/accelerate/multi_gpu.yaml (DDP) instead"
            )
        if self.accelerator.device.type == "cpu":
            # small models on the CPU lose time to denormal floats: flushing them makes a step
            # of the latent route's autoencoder and denoiser 6% faster (docs/BENCHMARKS.md);
            # it is a process-wide setting
            torch.set_flush_denormal(True)
        self.model = model
        self.val_dataset, self.collate_fn = sample_dataset, collate_fn
        self.sample_batch = self._sample_batch(sample_dataset or train_dataset, collate_fn)
        self.streaming = isinstance(train_dataset, IterableDataset)  # shuffles itself
        loader = self._loader(train_dataset, collate_fn, num_workers)
        optimizer, scheduler = self._optimizer(model)
        self.wrapped, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            _LossModule(model), optimizer, loader, scheduler
        )
        if config.compile:  # inductor; the first steps pay for the compilation
            self.wrapped = torch.compile(self.wrapped)
        if not self.streaming and len(self.loader) == 0:
            raise ValueError(
                f"the data set has {len(train_dataset)} samples, fewer than one "
                f"batch (train.batch_size={config.batch_size})"
            )
        self.ema = (
            EMAModel(model.parameters(), decay=config.ema_decay) if config.ema_decay else None
        )
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        self.step = 0  # optimizer updates done
        self.micro = 0  # micro-batches this process has trained on
        self.skipped = 0  # updates skipped for a non-finite loss
        self.scaler_skipped = 0  # fp16 updates the gradient scaler dropped (inf/nan grads)
        self.nonfinite_in_a_row = 0
        self.bad_window = False  # a micro-batch of the current update had a non-finite loss
        self.grad_norm: torch.Tensor | None = None
        self.last_metrics: dict[str, float] = {}

    def _accelerator(self, model: torch.nn.Module) -> Accelerator:
        """Accelerate, set up from the config: processes, precision, logs, seeded sampling;
        DDP looks for parameters a step leaves unused when the model says some may be (an
        autoencoder's discriminator before it starts)."""
        config = self.config
        unused = bool(getattr(model, "may_leave_parameters_unused", False))
        accelerator = Accelerator(
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)],
            cpu=cpu_processes(),
            mixed_precision=resolve_mixed_precision(config.mixed_precision),
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=default_trackers(self.out / "logs"),
            project_config=ProjectConfiguration(
                project_dir=str(self.out), logging_dir=str(self.out / "logs")
            ),
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True, data_seed=config.seed
            ),
        )
        enable_cpu_fsdp(accelerator)
        return accelerator

    def _loader(
        self, dataset: Dataset, collate_fn: Callable | None, num_workers: int
    ) -> DataLoader:
        """The training batches, shuffled by a generator of their own (unless streamed)."""
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=not self.streaming,
            drop_last=True,
            collate_fn=collate_fn,
            num_workers=num_workers,
            # its own generator: starting an epoch must not draw from the
            # global RNG, or a resumed run's noise would drift from the original
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    def _optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW and its learning-rate schedule (stepped once per process per update)."""
        config = self.config
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.learning_rate,
            betas=tuple(config.adam_betas),
            weight_decay=config.weight_decay,
        )
        n = self.accelerator.num_processes
        scheduler = get_scheduler(
            config.lr_schedule,
            optimizer,
            num_warmup_steps=config.warmup_steps * n,
            num_training_steps=config.max_steps * n,
        )
        return optimizer, scheduler

    def _sample_batch(self, dataset: Dataset, collate_fn: Callable | None) -> dict | None:
        """A fixed batch for sample grids, so grids over training are comparable."""
        if not hasattr(self.model, "log_images"):
            return None
        if isinstance(dataset, IterableDataset):
            items = list(itertools.islice(iter(dataset), self.config.num_samples))
        else:
            items = [dataset[i] for i in range(min(self.config.num_samples, len(dataset)))]
        return collate_fn(items) if collate_fn else torch.utils.data.default_collate(items)

    # ---- the loop ------------------------------------------------------------------------

    def train(self) -> TrainResult:
        """Run until `max_steps` optimizer updates; resume first if `config.resume` says so."""
        cfg, acc = self.config, self.accelerator
        acc.init_trackers("t2i")
        self._maybe_resume()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not acc.is_main_process,
            desc="train",
            dynamic_ncols=True,
        )
        window: dict[str, float] = {}
        pending: list[dict[str, torch.Tensor]] = []  # the update's micro-batches so far
        while self.step < cfg.max_steps:
            for batch in self._batches():
                pending.append(self._update(batch))
                if not acc.sync_gradients:
                    continue
                losses = {k: torch.stack([p[k] for p in pending]).mean() for k in pending[0]}
                pending = []
                self.step += 1
                bar.update(1)
                self._accumulate(window, losses)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    metrics = self._log(window)
                    bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}")
                    window = {}
                if self.step % cfg.sample_every == 0:
                    self.write_samples()
                    if self.step < cfg.max_steps:  # the end validates in _finish
                        self.validate()
                    self.write_loss_curve()
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.step >= cfg.max_steps:
                    break
        bar.close()
        return self._finish()

    def _batches(self):
        """This epoch's batches, skipping those a resumed run already consumed."""
        if self.streaming:
            return self._stream()
        micro = self.micro = self.step * self.config.gradient_accumulation_steps
        epoch, skip = divmod(micro, len(self.loader))
        self.loader.set_epoch(epoch)
        if hasattr(self.loader.dataset, "set_epoch"):  # draws of its own (dropped captions)
            self.loader.dataset.set_epoch(epoch)
        return self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader

    def _stream(self):
        """Batches of a streamed data set, epoch after epoch without end; a resumed run reads
        past the batches it already consumed, so the data order continues."""
        skip = self.micro = self.step * self.config.gradient_accumulation_steps
        for epoch in itertools.count():
            self.loader.set_epoch(epoch)
            for batch in self.loader:
                if skip:
                    skip -= 1
                    continue
                yield batch

    def _update(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One micro-batch: forward, backward, and on the last micro-batch an optimizer step."""
        acc = self.accelerator
        torch.manual_seed(self._micro_seed())
        self.micro += 1
        batch = self._transform(batch)
        with acc.accumulate(self.wrapped):
            with acc.autocast():
                losses = self.wrapped(batch)
            loss = losses["loss"]
            # every scalar term averaged over the processes, in one all-reduce: what is
            # logged is the global batch's loss, and one process's non-finite loss skips
            # the update on all
            names = [k for k, v in losses.items() if v.numel() == 1]
            means = acc.reduce(
                torch.stack([losses[k].detach().float().reshape(()) for k in names]), "mean"
            )
            if bool(means[names.index("loss")].isfinite()):
                acc.backward(loss)
            else:
                self.bad_window = True
            if acc.sync_gradients:
                self._optimizer_step()
        return dict(zip(names, means, strict=True))

    def _micro_seed(self) -> int:
        """The seed of this micro-batch's random draws (noise, timesteps, dropped captions,
        dropout): the run's seed and the batch's place in the global order of the loader's
        batches. Two processes then draw what one process draws for the same batches as
        gradient accumulation, and no two processes draw the same numbers."""
        acc = self.accelerator
        index = self.micro * acc.num_processes + acc.process_index
        return (self.config.seed % 2**31) * 2**32 + index

    @torch.no_grad()
    def _transform(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with `batch_transform`'s additions (it is left as is without one)."""
        if self.batch_transform is None:
            return batch
        with self.accelerator.autocast():
            return self.batch_transform(batch)

    def _optimizer_step(self) -> None:
        """Clip, step and schedule, or skip the update when its window had a non-finite loss."""
        if self.bad_window:
            self.bad_window = False
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.nonfinite_in_a_row += 1
            logger.warning(
                "non-finite loss at step %d: update skipped (%d so far)",
                self.step + 1,
                self.skipped,
            )
            if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"the loss was not finite in {self.nonfinite_in_a_row} updates in a row "
                    f"(step {self.step + 1}, train.max_nonfinite_steps="
                    f"{self.config.max_nonfinite_steps}); lower train.learning_rate or check "
                    f"the data"
                )
            return
        self.nonfinite_in_a_row = 0
        if self.config.max_grad_norm is not None:
            self.grad_norm = self.accelerator.clip_grad_norm_(
                self.wrapped.parameters(), self.config.max_grad_norm
            )
        self.optimizer.step()
        self.scheduler.step()  # Accelerate's scheduler holds still when the scaler skipped
        self.optimizer.zero_grad(set_to_none=True)
        if self.optimizer.step_was_skipped:  # fp16: the scaler found inf/nan gradients
            self.scaler_skipped += 1
            return
        if self.ema is not None:
            self.ema.step(self.model.parameters())

    def _accumulate(self, window: dict[str, float], losses: dict[str, torch.Tensor]) -> None:
        """Add this update's loss terms to the running sums of the log window."""
        for k, v in losses.items():
            if torch.isfinite(v):
                window[k] = window.get(k, 0.0) + v.item()
        window["_n"] = window.get("_n", 0) + 1

    def _log(self, window: dict[str, float]) -> dict[str, float]:
        """Log the window's mean loss terms, the learning rate and the skipped-step count."""
        n = max(window.pop("_n", 1), 1)
        metrics = {k: v / n for k, v in window.items()}
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["skipped_steps"] = self.skipped
        if self.accelerator.scaler is not None:
            metrics["scaler_skipped_steps"] = self.scaler_skipped
        if self.grad_norm is not None:
            metrics["grad_norm"] = float(self.grad_norm)
        self.accelerator.log(metrics, step=self.step)
        self.last_metrics = metrics
        return metrics

    # ---- samples, checkpoints, the end ----------------------------------------------------

    @torch.no_grad()
    def write_samples(self) -> list[Path]:
        """Save the model's `log_images` for the fixed sample batch as PNG grids."""
        acc, model = self.accelerator, self.model
        if self.sample_batch is None or not (acc.is_main_process or self.fsdp):
            return []  # under FSDP every process takes part: the weights are sharded
        batch = self._transform(send_to_device(self.sample_batch, acc.device))
        generator = torch.Generator(device=acc.device).manual_seed(self.config.seed)
        was_training = model.training
        model.eval()
        with self._ema_weights(), acc.autocast():
            images = self._call("log_images", batch, generator=generator)
        model.train(was_training)
        if not acc.is_main_process:
            return []
        paths = []
        if "caption" in batch:  # so a reader of a grid knows what each cell was asked for
            path = self.out / "samples" / "captions.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{i}: {c}\n" for i, c in enumerate(batch["caption"])))
        for name, x in images.items():
            if self.decode_tokens is not None:  # codes or latents, not pixels
                with acc.autocast():
                    x = self.decode_tokens(x)
            elif not (torch.is_tensor(x) and x.is_floating_point()):
                raise TypeError(f"log_images()[{name!r}] is not an image batch; pass decode_tokens")
            path = self.out / "samples" / f"{name}_{self.step:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            x = (x.float().clamp(-1, 1) + 1) / 2
            nrow = max(1, int(math.sqrt(x.shape[0]))) if x.dim() == 4 else 1
            save_image(x, path, nrow=nrow, padding=1)
            paths.append(path)
            if name == "samples" and self.score_samples is not None:
                self._log_scores(self.score_samples(x * 2 - 1, batch))
        return paths

    def _call(self, method: str, batch: dict, **kwargs: Any) -> Any:
        """A model method outside the training step: under FSDP through the sharded module
        (its hooks gather the weights, so every process calls it), else on the model."""
        if not self.fsdp:
            return getattr(self.model, method)(batch, **kwargs)
        out = self.wrapped(batch, method=method, **kwargs)
        # FSDP keeps the root's weights gathered after a forward (backward would need them
        # next); put them back in shards, where the optimizer and the EMA weights hold them
        for module in self.accelerator.unwrap_model(self.wrapped).modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        return out

    @torch.no_grad()
    def validate(self, max_batches: int = 8) -> dict[str, float]:
        """The loss terms on the held-back samples (EMA weights when on; the same noise for the
        same seed), up to `max_batches` batches: logged as `val/...` and written to
        validation.json in the run folder; {} without held-back samples."""
        if self.val_dataset is None:
            return {}
        loader = DataLoader(self.val_dataset, self.config.batch_size, collate_fn=self.collate_fn)
        sums, n = {}, 0
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(devices=[]), self._ema_weights():
            torch.manual_seed(self.config.seed)
            for batch in itertools.islice(loader, max_batches):
                batch = self._transform(send_to_device(batch, self.accelerator.device))
                with self.accelerator.autocast():
                    losses = self._call("training_losses", batch)
                size = len(next(iter(batch.values())))
                for key, value in losses.items():
                    if value.numel() == 1:
                        sums[key] = sums.get(key, 0.0) + float(value) * size
                n += size
        self.model.train(was_training)
        scores = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
        if scores:  # a row of its own in metrics.csv (and TensorBoard), beside the training rows
            self.accelerator.log(scores, step=self.step)
        if scores and self.accelerator.is_main_process:
            (self.out / "validation.json").write_text(
                json.dumps({"step": self.step, "samples": n, **scores}, indent=1) + "\n"
            )
            logger.info("validation at step %d (%d samples): %s", self.step, n, scores)
        return scores

    def write_loss_curve(self) -> Path | None:
        """samples/loss_curve.png: the training loss and the validation loss so far, from
        logs/metrics.csv (None on other processes, or before anything was logged)."""
        metrics = self.out / "logs" / "metrics.csv"
        if not self.accelerator.is_main_process or not metrics.is_file():
            return None
        return plot_losses(read_metrics(metrics, "all"), self.out / "samples" / "loss_curve.png")

    def _log_scores(self, scores: dict[str, float]) -> None:
        """Log the sample scores at this step (and keep them with the last metrics)."""
        scores = {f"samples/{k}": float(v) for k, v in scores.items()}
        self.accelerator.log(scores, step=self.step)
        self.last_metrics.update(scores)
        logger.info("step %d sample scores: %s", self.step, scores)

    @contextlib.contextmanager
    def _ema_weights(self) -> Iterator[None]:
        """Swap the EMA weights in for the block (and back out) when EMA is on. The
        training weights wait on the CPU (diffusers' `EMAModel.store`), or under FSDP as the
        sharded tensors they are: a shard must go back into a shard."""
        if self.ema is None:
            yield
            return
        params = list(self.model.parameters())
        kept = [
            p.detach().clone() if isinstance(p, DTensor) else p.detach().to("cpu", copy=True)
            for p in params
        ]
        self.ema.copy_to(params)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(params, kept, strict=True):
                    param.copy_(saved)

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the whole run state (atomically)."""
        state = {
            "step": self.step,
            "skipped_steps": self.skipped,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
        }
        ema = None
        if self.ema is not None:
            state["ema"] = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
            names = [n for n, _ in self.model.named_parameters()]
            ema = dict(zip(names, map(full_tensor, self.ema.shadow_params), strict=True))
        return save_checkpoint(
            self.accelerator, self.out, self.step, state, ema, self.config.checkpoints_total_limit
        )

    def _maybe_resume(self) -> None:
        """Restore model, optimizer, scheduler, RNG and loop state from a checkpoint."""
        path = resolve_resume(self.out, self.config.resume)
        if path is None:
            return
        state, ema = load_checkpoint(self.accelerator, path)
        self.step = state["step"]
        self.skipped = state["skipped_steps"]
        self.nonfinite_in_a_row = state["nonfinite_in_a_row"]
        if self.ema is not None and ema is not None:
            shadow = [like(ema[name], p) for name, p in self.model.named_parameters()]
            self.ema.load_state_dict({**state["ema"], "shadow_params": shadow})
            self.ema.to(self.accelerator.device)
        logger.info("resumed from %s at step %d", path, self.step)
        if self.accelerator.is_main_process:
            dropped = self.accelerator.get_tracker("csv").rewind(self.step)
            if dropped:
                logger.info(
                    "logs/metrics.csv: %d rows past step %d dropped (steps the interruption "
                    "undid; they are logged again as they are retrained)",
                    dropped,
                    self.step,
                )

    def _finish(self) -> TrainResult:
        """Final samples, checkpoint (unless this step just wrote them) and model (EMA weights
        if on); close the trackers."""
        if self.step % self.config.sample_every:
            self.write_samples()
        if self.step % self.config.checkpoint_every:
            self.save_checkpoint()
        model_dir = None
        acc = self.accelerator
        self.last_metrics.update(self.validate())  # every process: CLIP's loss gathers
        self.write_loss_curve()
        model = acc.unwrap_model(self.model)
        if self.fsdp and hasattr(model, "save_pretrained"):  # gathered by every process
            with self._ema_weights():
                model = unsharded_copy(model, acc.get_state_dict(self.wrapped))
        if acc.is_main_process and hasattr(model, "save_pretrained"):
            model_dir = self.out / "model"
            tmp = self.out / ".tmp-model"
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.nullcontext() if self.fsdp else self._ema_weights():
                model.save_pretrained(str(tmp))
            shutil.rmtree(model_dir, ignore_errors=True)
            os.replace(tmp, model_dir)
        acc.wait_for_everyone()
        acc.end_training()
        return TrainResult(self.step, self.last_metrics, self.skipped, model_dir)


# ---- FSDP: sharded tensors in and out -----------------------------------------------------


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor (FSDP's DTensor) gathered whole on every process (a collective:
    every process calls it); any other tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `param` is: this process's shard of it under FSDP (each process
    holds the whole tensor, so nothing is sent), else itself."""
    if isinstance(param, DTensor):
        return distribute_tensor(
            full.to(param.device, param.dtype),
            param.device_mesh,
            param.placements,
            src_data_rank=None,
        )
    return full


def unsharded_copy(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """On the main process, a new unsharded model of `model`'s config holding `state` (the
    gathered state dict of the `_LossModule` around it); elsewhere `model` (not saved)."""
    if not state:  # the gathered state reaches the main process only
        return model
    copy = type(model).from_config(model.config)
    prefix = "model."
    copy.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()}, strict=True)
    return copy
