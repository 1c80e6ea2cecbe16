"""`open_chat`: the library behind `vlmft chat` — a trained checkpoint (or the base model, or a merged
model folder) answering questions about one video.

What to load is resolved as `vlmft eval --checkpoint` resolves it (`evaluate.target`), with the run's
stored settings, so frames, frame sampling, fps and the system prompt are the run's; the model loads as
evaluation loads it (`evaluate.runner.load_model`). The video is read by `video_source` as training
samples a clip. A conversation is kept as stage 2 trains it: the frames belong to the first user turn,
later turns are text, and every prompt is the whole history encoded by the backend's `encode_prompt`.
Greedy decoding unless a temperature is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.ckpt.merge import MERGE_INFO
from vlmft_cli.data.layout import METADATA_FILE
from vlmft_cli.errors import ConfigError
from vlmft_cli.evaluate.target import EvalRequest, EvalTarget, is_base_model, resolve_target
from vlmft_cli.model_backend import Turn
from vlmft_cli.reporting import NullReporter, Reporter
from vlmft_cli.video_source import DEFAULT_SIZE, VideoFrames, VideoInput, read_video


@dataclass(frozen=True)
class GenerationOptions:
    """How answers are decoded: greedy unless `temperature` is set above 0 (then sampled, with `top_p`)."""

    max_new_tokens: int = 128
    temperature: float | None = None
    top_p: float | None = None
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return not self.temperature

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature is not None and not 0 <= self.temperature <= 100:
            raise ConfigError(f"--temperature must be between 0 and 100, not {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.top_p is not None and self.greedy:
            raise ConfigError("--top-p only applies to sampling", hint="pass --temperature above 0 as well, or leave out --top-p for greedy answers")

    def describe(self) -> dict[str, Any]:
        sampled = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return {"decoding": "greedy" if self.greedy else "sampling", "max_new_tokens": self.max_new_tokens, **({} if self.greedy else sampled)}


@dataclass(frozen=True)
class ChatRequest:
    """What `vlmft chat` asks for. `checkpoint` is what `eval --checkpoint` takes, or a model folder."""

    video: VideoInput
    checkpoint: str | None = None
    model: str | None = None
    backend: str | None = None
    profile: str | None = None
    runs_dir: Path = Path("experiments")
    home: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # other settings given (max_frames, system_prompt, …)
    size: int | None = None  # frames resized to size×size; None: as the run's data was extracted; 0: as they are
    generation: GenerationOptions = GenerationOptions()


@dataclass(frozen=True)
class ChatAnswer:
    """One answer, with its prompt length and how long each part took."""

    question: str
    answer: str
    turn: int  # 1 for the first question of a conversation
    prompt_tokens: int
    new_tokens: int
    encode_s: float
    generate_s: float


def frame_size(size: int | None, data: Path | None) -> int | None:
    """The square frames are resized to: `size` if given (0: none), else the `--size` the data the model
    was trained on was extracted with (its metadata.json), else `data extract`'s default."""
    if size is not None:
        return size or None
    try:
        recorded = json.loads((Path(data) / METADATA_FILE).read_text(encoding="utf-8"))["options"]["size"] if data else None
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    return recorded if isinstance(recorded, int) and recorded > 0 else DEFAULT_SIZE


def model_folder(ref: str | None) -> Path | None:
    """`ref` as a plain model folder (what `ckpt merge` writes), else None."""
    if not ref or is_base_model(ref):
        return None
    path = Path(ref).expanduser()
    if path.is_dir() and (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        return path
    return None


def _merged_target(folder: Path, request: ChatRequest, reporter: Reporter) -> EvalTarget:
    """A merged model with the settings of the run it came from (when `vlmft_merge.json` still points at
    that checkpoint), else with the stage defaults as for a base model."""
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):  # no readable record: the stage defaults apply
        info = json.loads((folder / MERGE_INFO).read_text(encoding="utf-8"))
    origin = info.get("checkpoint") if isinstance(info, dict) else None
    common = {"backend": request.backend, "profile": request.profile, "home": request.home, "settings": request.settings, "needs_data": False}
    if isinstance(origin, str) and Path(origin).is_dir():
        target = resolve_target(EvalRequest(checkpoint=origin, runs_dir=request.runs_dir, **common), reporter)
        settings = target.settings.model_copy(update={"model": str(folder)})
        return dataclasses.replace(target, settings=settings, checkpoint=None)
    reporter.warning(f"{folder} does not name the checkpoint it was merged from; its run's settings (frames, system prompt) are not known, the stage defaults apply")
    return resolve_target(EvalRequest(checkpoint=None, model=str(folder), runs_dir=request.runs_dir, **common), reporter)


def resolve_chat_target(request: ChatRequest, reporter: Reporter | None = None) -> EvalTarget:
    reporter = reporter or NullReporter()
    folder = model_folder(request.checkpoint)
    if folder is not None:
        if request.model:
            raise ConfigError(f"{folder} is a whole model; --model does not apply", hint="leave out --model")
        return _merged_target(folder, request, reporter)
    return resolve_target(
        EvalRequest(
            checkpoint=request.checkpoint, model=request.model, backend=request.backend, profile=request.profile,
            runs_dir=request.runs_dir, home=request.home, settings=request.settings, needs_data=False,
        ),
        reporter,
    )  # fmt: skip


class ChatSession:
    """A loaded model, one video's frames and the conversation so far."""

    def __init__(self, target: EvalTarget, loaded: Any, video: VideoFrames, generation: GenerationOptions, *, load_s: float, video_s: float, reporter: Reporter | None = None) -> None:
        from vlmft_cli.evaluate.generation import stop_token_ids
        from vlmft_cli.model_backend import pad_token_id

        self.target, self.loaded, self.video, self.generation = target, loaded, video, generation
        self.load_s, self.video_s = load_s, video_s
        self.tokenizer = loaded.processor.tokenizer
        self.stop_ids = stop_token_ids(loaded.backend, self.tokenizer)
        self.pad_id = pad_token_id(self.tokenizer, self.stop_ids[0])
        self.history: list[Turn] = []
        self.reporter = reporter or NullReporter()

    @property
    def label(self) -> str:
        if self.target.checkpoint:
            return self.target.label
        model = self.target.settings.model
        return model if Path(model).is_dir() else f"{model} (base model)"

    def reset(self) -> None:
        """Start a new conversation about the same video."""
        self.history = []

    def encode(self, question: str) -> Any:
        """The prompt for `question` after the history: exactly what the backend encodes for generation."""
        turns = [*self.history, Turn("user", question)]
        return self.loaded.backend.encode_prompt(self.loaded.processor, self.video.frames, turns, fps=self.video.fps)

    def ask(self, question: str) -> ChatAnswer:
        """Answer `question` in the conversation so far, and keep both in the history."""
        import torch

        from vlmft_cli.evaluate.generation import decode_answer, generate_padded, left_pad

        question = question.strip()
        if not question:
            raise ConfigError("the question is empty")
        started = time.monotonic()
        prompt = self.encode(question)
        max_length = self.target.settings.max_length
        if len(prompt) > max_length:
            self.reporter.warning(f"the prompt is {len(prompt)} tokens, longer than the {max_length} the model was trained on (max_length)")
        batch = left_pad([prompt], self.pad_id)
        encoded = time.monotonic()
        model, device, options = self.loaded.model, self.loaded.device, self.generation
        sampling = None
        if not options.greedy:
            torch.manual_seed(options.seed + len(self.history))
            sampling = {"temperature": options.temperature, **({"top_p": options.top_p} if options.top_p is not None else {})}
        new_tokens = generate_padded(
            model, batch, pad_token_id=self.pad_id, stop_ids=self.stop_ids, max_new_tokens=options.max_new_tokens, device=device, sampling=sampling
        )[0]
        answer = decode_answer(self.tokenizer, new_tokens, self.stop_ids)
        done = time.monotonic()
        self.history += [Turn("user", question), Turn("assistant", answer)]
        generated = next((i for i, token in enumerate(new_tokens) if token in self.stop_ids), len(new_tokens))
        return ChatAnswer(question, answer, len(self.history) // 2, len(prompt), generated, round(encoded - started, 4), round(done - encoded, 4))

    def describe(self) -> dict[str, Any]:
        """The model, frames and settings of this session, for `--json`."""
        settings = self.target.settings
        return {
            "model": {
                "label": self.label,
                "model": settings.model,
                "backend": self.loaded.backend.name,
                "checkpoint": str(self.target.checkpoint.path) if self.target.checkpoint else None,
                "step": self.target.step,
            },
            "frames": {
                "count": len(self.video.frames),
                "indices": self.video.indices,
                "files": self.video.files,
                "source_frames": self.video.source_frames,
                "source_fps": self.video.source_fps,
                "fps": self.video.fps,
                "size": list(self.video.frames[0].size) if self.video.frames else None,
                "max_frames": settings.max_frames,
                "frame_sampling": str(getattr(settings.frame_sampling, "value", settings.frame_sampling)),
            },
            "system_prompt": getattr(self.loaded.processor, "system_prompt", None),
            "generation": self.generation.describe(),
            "device": self.loaded.device,
        }


def open_chat(request: ChatRequest, reporter: Reporter | None = None) -> ChatSession:
    """Resolve the model, read the video and load the model (with its adapter) for questions."""
    from vlmft_cli.evaluate.runner import load_model
    from vlmft_cli.runtime import quiet_libraries

    reporter = reporter or NullReporter()
    request.generation.check()
    target = resolve_chat_target(request, reporter)
    settings = target.settings
    started = time.monotonic()
    video = read_video(request.video, max_frames=settings.max_frames, sampling=settings.frame_sampling, size=frame_size(request.size, settings.data), fps=settings.fps)
    video_s = time.monotonic() - started
    reporter.info(f"{len(video.frames)} of {video.source_frames} frames (indices {', '.join(map(str, video.indices))})")
    quiet_libraries()
    started = time.monotonic()
    reporter.info(f"Loading {target.label if target.checkpoint else settings.model}")
    loaded = load_model(target, reporter)
    return ChatSession(target, loaded, video, request.generation, load_s=round(time.monotonic() - started, 3), video_s=round(video_s, 4), reporter=reporter)


__all__ = ["ChatAnswer", "ChatRequest", "ChatSession", "GenerationOptions", "model_folder", "open_chat", "resolve_chat_target"]
