"""Qwen2.5-VL's and Qwen3-VL's special tokens and chat templates (kept free of heavy imports).

Both families share Qwen2.5's chatml markers and vision tokens; their real ids are listed so the tiny
tokenizer adds the tokens in the same order. A video is `<|vision_start|><|video_pad|><|vision_end|>` in
the template; the processor expands it (one `<|video_pad|>` per visual token, and for Qwen3-VL one
timestamped block per temporal chunk).
"""

from __future__ import annotations

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

#: The special tokens of the Qwen2.5 / Qwen3 vocabularies from id 151643 on, in id order.
SPECIAL_TOKEN_IDS: dict[str, int] = {
    END_OF_TEXT: 151643,
    IM_START: 151644,
    IM_END: 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    VISION_START: 151652,
    VISION_END: 151653,
    "<|vision_pad|>": 151654,
    IMAGE_PAD: 151655,
    VIDEO_PAD: 151656,
}

#: Tokens the encoder needs by id; a tokenizer lacking one is refused.
REQUIRED_TOKENS: tuple[str, ...] = (END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

#: Named multimodal tokens (the tokenizer attributes transformers' Qwen processors read).
NAMED_TOKENS: dict[str, str] = {
    "image_token": IMAGE_PAD,
    "video_token": VIDEO_PAD,
    "vision_start_token": VISION_START,
    "vision_end_token": VISION_END,
}

#: Qwen2.5-VL-*-Instruct's chat template (verbatim): a default system turn, media before text.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen3-VL-*-Instruct's chat template for plain conversations (its tool-call branches left out): no
#: default system turn, media before text.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content['type'] == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}{{- 'Video ' ~ video_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def timestamp_text(seconds: float) -> str:
    """Qwen3-VL's marker before a temporal chunk, e.g. "<1.5 seconds>"."""
    return f"<{seconds:.1f} seconds>"
