"""The one training loop, on a toy model defined here: it must know no model family."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch.utils.data import Dataset, Subset

from t2i.config import TrainConfig
from t2i.training import NonFiniteLossError, Trainer, list_checkpoints, read_metrics


class Toy(ModelMixin, ConfigMixin):
    """A noisy linear regression; `bad` samples make the loss NaN."""

    @register_to_config
    def __init__(self, dim: int = 4, noise: float = 0.1) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["x"]
        pred = self.lin(x) + self.config.noise * torch.randn_like(x)  # uses the torch RNG
        loss = ((pred - batch["y"]) ** 2).mean()
        if batch["bad"].any():
            loss = loss * float("nan")
        return {"loss": loss, "mse": loss.detach()}

    @torch.no_grad()
    def log_images(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        img = torch.tanh(self.lin(batch["x"]))[:, :3, None, None].expand(-1, 3, 4, 4)
        return {"pred": img}


class Pairs(Dataset):
    """y = A x for a fixed A; samples listed in `bad` carry a NaN flag."""

    def __init__(self, n: int = 64, bad: set[int] | frozenset = frozenset()) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.randn(4, 4, generator=g)
        self.bad = bad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "bad": torch.tensor(i in self.bad)}


def make(tmp_path, *, bad=frozenset(), trainer_cls=Trainer, **kw) -> Trainer:
    torch.manual_seed(0)
    defaults = dict(
        output_dir=str(tmp_path / "run"),
        max_steps=20,
        batch_size=8,
        learning_rate=0.05,
        warmup_steps=2,
        log_every=5,
        sample_every=10,
        checkpoint_every=10,
        num_samples=4,
    )
    return trainer_cls(Toy(), TrainConfig(**{**defaults, **kw}), Pairs(bad=bad))


def test_loss_goes_down_and_run_writes_its_outputs(tmp_path):
    trainer = make(tmp_path, max_steps=60)
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.train()
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.csv")
    assert result.step == 60
    assert [r["step"] for r in rows] == list(range(5, 61, 5))
    assert rows[-1]["loss"] < 0.2 * rows[0]["loss"]
    assert {"mse", "lr", "skipped_steps", "grad_norm"} <= rows[0].keys()
    assert rows[-1]["lr"] < rows[5]["lr"]  # cosine decay
    assert (tmp_path / "run" / "samples" / "pred_0000010.png").is_file()
    assert (result.model_dir / "config.json").is_file()
    assert any(result.model_dir.glob("*.safetensors"))
    # the saved model is the trained one at the end (no EMA here), not the initial one
    reloaded = Toy.from_pretrained(result.model_dir)
    final, saved = trainer.model.state_dict(), reloaded.state_dict()
    assert saved.keys() == final.keys() == initial.keys()
    assert all(torch.equal(saved[k], final[k].detach().cpu()) for k in final)
    assert not any(torch.equal(saved[k], initial[k]) for k in initial)
    x = Pairs().x
    with torch.no_grad():
        assert torch.equal(reloaded.lin(x), trainer.model.lin(x))
    ckpts = list_checkpoints(tmp_path / "run")
    assert [c.name for c in ckpts] == [
        "checkpoint-0000040",
        "checkpoint-0000050",
        "checkpoint-0000060",
    ]  # total_limit = 3
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


class Killed(Trainer):
    """Dies right after its checkpoint at step AT, like a run killed between saves."""

    AT = 10

    def save_checkpoint(self):
        path = super().save_checkpoint()
        if self.step == self.AT:
            raise KeyboardInterrupt
        return path


@pytest.mark.parametrize("accum", [1, 2])
def test_killed_run_resumes_to_the_same_state(tmp_path, accum):
    straight = make(tmp_path / "a", gradient_accumulation_steps=accum, ema_decay=0.9)
    straight.train()
    with pytest.raises(KeyboardInterrupt):
        make(
            tmp_path / "b", trainer_cls=Killed, gradient_accumulation_steps=accum, ema_decay=0.9
        ).train()
    resumed = make(
        tmp_path / "b", gradient_accumulation_steps=accum, ema_decay=0.9, resume="latest"
    )
    result = resumed.train()
    assert result.step == 20
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(straight.ema.shadow_params, resumed.ema.shadow_params, strict=True):
        assert torch.equal(p, q)


class KilledAfterLogging(Trainer):
    """Dies at step 15, after logging steps 11-15 past its checkpoint at step 10."""

    def _log(self, window):
        metrics = super()._log(window)
        if self.step == 15:
            raise KeyboardInterrupt
        return metrics


def test_a_resumed_run_logs_each_step_once_with_the_straight_runs_figures(tmp_path):
    straight = make(tmp_path / "a", log_every=1)
    straight.train()
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "b", log_every=1, trainer_cls=KilledAfterLogging).train()
    make(tmp_path / "b", log_every=1, resume="latest").train()
    rows = read_metrics(tmp_path / "b" / "run" / "logs" / "metrics.csv")
    want = read_metrics(tmp_path / "a" / "run" / "logs" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 21))  # 11-15 not twice
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in want], rel=1e-6)


def test_resume_from_a_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make(tmp_path, resume=str(tmp_path / "nowhere")).train()


def test_nonfinite_loss_skips_the_update_and_counts_it(tmp_path):
    trainer = make(tmp_path, bad={3}, max_steps=16)  # one bad sample: one bad batch an epoch
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert result.skipped_steps == 2  # 8 batches an epoch, 16 steps
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)
    )
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.csv")
    assert rows[-1]["skipped_steps"] == 2


def test_nonfinite_loss_in_a_row_stops_with_a_clear_error(tmp_path):
    trainer = make(tmp_path, bad=set(range(64)), max_nonfinite_steps=3)
    with pytest.raises(NonFiniteLossError, match="3 updates in a row"):
        trainer.train()


def test_ema_weights_are_what_the_final_model_saves(tmp_path):
    trainer = make(tmp_path, ema_decay=0.5, max_steps=10)
    result = trainer.train()
    saved = Toy.from_pretrained(result.model_dir)
    assert torch.equal(saved.lin.weight, trainer.ema.shadow_params[0].cpu())
    assert not torch.equal(saved.lin.weight, trainer.model.lin.weight)
    state = json.loads((list_checkpoints(tmp_path / "run")[-1] / "trainer_state.json").read_text())
    assert state["step"] == 10 and state["ema"]["decay"] == 0.5


def test_compile_runs_the_model_through_torch_compile_on_the_cpu(tmp_path):
    trainer = make(tmp_path, compile=True, max_steps=10)
    assert type(trainer.wrapped).__name__ == "OptimizedModule"
    result = trainer.train()
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.csv")
    assert result.step == 10 and rows[-1]["loss"] < rows[0]["loss"]
    assert Toy.from_pretrained(result.model_dir).lin.weight.dtype == torch.float32


def test_bf16_autocast_trains_fp32_weights_on_the_cpu(tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # one precision per process: this test's own
    trainer = make(tmp_path, mixed_precision="bf16", max_steps=10)
    assert trainer.accelerator.mixed_precision == "bf16"
    result = trainer.train()
    assert result.step == 10 and trainer.model.lin.weight.dtype == torch.float32
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.csv")
    assert rows[-1]["loss"] < rows[0]["loss"]
    AcceleratorState._reset_state()


def test_updates_the_gradient_scaler_drops_leave_the_schedule_and_the_ema_where_they_were(
    tmp_path,
):
    # fp16's path minus its autocast: a real gradient scaler in the places Accelerate puts
    # one under fp16 on a GPU (its backward scales the loss, its optimizer steps through the
    # scaler, its scheduler holds when that step was skipped), which on the CPU it will not
    from accelerate.optimizer import AcceleratedOptimizer

    trainer = make(tmp_path, max_steps=6, log_every=6, ema_decay=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    optimizer = AcceleratedOptimizer(trainer.optimizer.optimizer, scaler=scaler)
    trainer.accelerator.scaler, trainer.accelerator._optimizers = scaler, [optimizer]
    trainer.optimizer = trainer.scheduler.optimizers[0] = optimizer
    calls = []

    def overflow_at_update_3(grad: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return grad * float("inf") if len(calls) == 3 else grad

    trainer.model.lin.weight.register_hook(overflow_at_update_3)
    result = trainer.train()
    assert result.step == 6 and trainer.scaler_skipped == 1 and trainer.skipped == 0
    assert scaler.get_scale() == 2.0**7  # halved once, for the overflow
    assert trainer.scheduler.scheduler.last_epoch == 5  # the schedule held for it
    assert trainer.ema.optimization_step == 5  # and so did the EMA
    assert torch.isfinite(trainer.model.lin.weight).all()
    row = read_metrics(tmp_path / "run" / "logs" / "metrics.csv")[-1]
    assert row["scaler_skipped_steps"] == 1 and row["skipped_steps"] == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 trains on CUDA")
def test_fp16_on_the_cpu_is_an_error_not_a_silent_fp32_run(tmp_path):
    with pytest.raises(ValueError, match="mixed_precision='fp16' needs a CUDA GPU"):
        make(tmp_path, mixed_precision="fp16")


def test_auto_precision_follows_what_accelerate_launch_names(monkeypatch):
    from t2i.training.devices import resolve_mixed_precision

    on_cpu = not torch.cuda.is_available()
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what launch sets when told nothing
    assert resolve_mixed_precision("auto") == ("no" if on_cpu else "bf16")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # e.g. configs/accelerate/*.yaml
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("no") == "no"  # the run's own setting wins
    if on_cpu:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
        with pytest.raises(ValueError, match="accelerate launch's mixed_precision='fp16'"):
            resolve_mixed_precision("auto")


def test_training_on_the_cpu_flushes_denormal_floats(tmp_path):
    torch.set_flush_denormal(False)  # an earlier test's trainer may have left it on
    tiny = torch.tensor([1e-40])  # a float32 denormal: kept unless flushing is on
    assert (tiny * 1.0).item() != 0.0
    try:
        make(tmp_path)
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)


def test_the_run_ends_with_a_seeded_validation_loss_on_the_held_back_samples(tmp_path):
    def run(name, steps):
        torch.manual_seed(0)
        config = dict(
            output_dir=str(tmp_path / name),
            max_steps=steps,
            batch_size=8,
            learning_rate=0.05,
            warmup_steps=2,
            log_every=5,
            sample_every=100,
            checkpoint_every=100,
        )
        pairs = Pairs(n=88)  # the last 24 held back: other samples of the same mapping
        training, held_back = Subset(pairs, range(64)), Subset(pairs, range(64, 88))
        Trainer(Toy(), TrainConfig(**config), training, sample_dataset=held_back).train()
        return json.loads((tmp_path / name / "validation.json").read_text())

    untrained, trained, again = run("a", 1), run("b", 60), run("c", 60)
    assert untrained["samples"] == 24  # every held-back sample, none of the training ones
    assert trained["val/loss"] < 0.5 * untrained["val/loss"]
    assert trained["val/loss"] == again["val/loss"]  # the same noise for the same seed


def test_resume_passes_over_damaged_checkpoints_to_the_newest_whole_one(tmp_path, caplog):
    straight = make(tmp_path / "a", max_steps=30, checkpoint_every=10)
    straight.train()
    run = tmp_path / "b"
    KilledAt20 = type("KilledAt20", (Killed,), {"AT": 20})
    with pytest.raises(KeyboardInterrupt):  # checkpoints 10 and 20, then killed
        make(run, max_steps=30, checkpoint_every=10, trainer_cls=KilledAt20).train()
    newest = list_checkpoints(run / "run")[-1]
    weights = next(newest.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated, as by a full disk
    with caplog.at_level("WARNING"):
        resumed = make(run, max_steps=30, checkpoint_every=10, resume="latest")
        resumed.train()
    assert (
        f"skipping {newest.name}: {weights.name} is" in caplog.text and "truncated" in caplog.text
    )
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)  # from step 10, to the same state


def test_a_run_whose_checkpoints_are_all_damaged_is_named_not_restarted(tmp_path):
    make(tmp_path, max_steps=20, checkpoint_every=10).train()
    for checkpoint in list_checkpoints(tmp_path / "run"):
        (checkpoint / "trainer_state.json").write_text('{"step": 99}')  # other bytes
    with pytest.raises(FileNotFoundError, match="every checkpoint in .* is damaged: checkpoint-"):
        make(tmp_path, max_steps=30, resume="latest").train()
    named = list_checkpoints(tmp_path / "run")[0]
    next(named.glob("*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="a damaged checkpoint: .*safetensors is missing"):
        make(tmp_path, max_steps=30, resume=str(named)).train()
