"""InternVL3's special tokens and chat template (Qwen2.5 chatml plus InternVL's image markers).

The strings match the native `-hf` checkpoints (OpenGVLab/InternVL3-*-hf): chatml turn markers from
Qwen2.5 and `<img>…</img>` around `<IMG_CONTEXT>` placeholders that the model replaces with vision
features. Kept free of heavy imports.
"""

from __future__ import annotations

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"

#: Every special token an InternVL3 tokenizer must know, in the order the tiny tokenizer adds them.
ALL_SPECIAL_TOKENS: tuple[str, ...] = (END_OF_TEXT, IM_START, IM_END, IMG_START, IMG_END, IMG_CONTEXT)

#: Named multimodal tokens (the attribute names transformers' InternVL processor reads from a tokenizer).
NAMED_IMAGE_TOKENS: dict[str, str] = {
    "start_image_token": IMG_START,
    "end_image_token": IMG_END,
    "context_image_token": IMG_CONTEXT,
}

#: InternVL3's `-hf` chat template (chatml; no default system turn; a video becomes "<video>\n").
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<image>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def frame_label(index: int) -> str:
    """The text before frame `index` (0-based) in a video prompt, as InternVL writes it: "Frame1: "."""
    return f"Frame{index + 1}: "
