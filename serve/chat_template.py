"""Chat messages -> prompt text: the tokenizer's own chat template when it has one, else a plain one.

The plain template (tiny attnlab models have no chat template) is one line per message and an open
assistant turn:

    system: You are terse.
    user: Hi
    assistant:

It adds no stop strings: pass `stop: ["\\nuser:"]` to end a reply at the next user turn.
"""

from __future__ import annotations


def render_chat(tokenizer, messages: list[dict]) -> str:
    """messages: [{"role": ..., "content": str}] -> the prompt for the model's next (assistant) turn."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
