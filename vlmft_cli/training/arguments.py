"""The Trainer's arguments for a run: the recipe, the profile's hardware values and vlmft's cadence."""

from __future__ import annotations

from typing import Any

from vlmft_cli import runs
from vlmft_cli.settings import Settings
from vlmft_cli.training.distributed import world_size


def report_to(settings: Settings) -> list[str]:
    """The loggers `report_to` names, checked against what transformers supports and what is installed here:
    a `ConfigError` names an unknown logger (with the close ones) or the missing package."""
    if settings.report_to == "none":
        return []
    import difflib

    from vlmft_cli.runtime import quiet_libraries

    quiet_libraries()  # transformers' integrations import bitsandbytes, which logs about a missing package
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from vlmft_cli.errors import ConfigError

    names = settings.report_to.split(",")
    installed = set(get_available_reporting_integrations())
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            close = difflib.get_close_matches(name, INTEGRATION_TO_CALLBACK, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"report_to: transformers has no logger {name!r} ({guess}known: none, {', '.join(sorted(INTEGRATION_TO_CALLBACK))})")
        if name not in installed:
            package = {"tensorboard": "tensorboard", "azure_ml": "azureml-core", "flyte": "flytekit"}.get(name, name.replace("_", "-"))
            raise ConfigError(
                f"report_to {name}: the {package} package is not installed here",
                hint=f"pip install {package}, or drop it from --report-to (the CSV metrics are always written)",
            )
    return names


def training_arguments(settings: Settings, run: runs.Run, *, accumulation: int, device: str, evaluates: bool) -> Any:
    """The Trainer's arguments for a run: the recipe, the profile's hardware values and vlmft's cadence
    (a step cadence when `save_steps` is set; otherwise `SaveCadenceCallback` sets it from hours)."""
    from transformers import TrainingArguments

    save_steps = settings.save_steps
    never = 10**9  # "not by steps": the hours callback (or the end of training) triggers the save
    return TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=settings.micro_batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        max_grad_norm=settings.max_grad_norm,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,
        num_train_epochs=settings.num_epochs,
        max_steps=settings.max_steps or -1,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=save_steps or never,
        eval_strategy="steps" if evaluates else "no",
        eval_steps=settings.eval_steps or save_steps or never,
        save_total_limit=None,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=settings.precision == "bf16",
        fp16=settings.precision == "fp16",
        dataloader_num_workers=settings.dataloader_workers,
        remove_unused_columns=False,
        report_to=report_to(settings),
        disable_tqdm=True,
        use_cpu=device == "cpu",
        label_names=["labels"],
        ddp_find_unused_parameters=False,
        ddp_backend="gloo" if device == "cpu" and world_size() > 1 else None,
        optim="adamw_torch",
    )
