"""One chat request through the official `openai` client, with SGLang's speculative stats:
the single request path of the demo and every served benchmark."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sglang_edsd.launcher import Server


@dataclass
class Answer:
    prompt: str
    text: str
    completion_tokens: int
    seconds: float
    accept_length: float | None  # SGLang's spec_accept_length; None without speculation
    verify_ct: int = 0  # verify rounds (spec_verify_ct); 0 without speculation
    correct_drafts: int = 0  # draft tokens the target accepted (spec_num_correct_drafts)
    prompt_tokens: int = 0
    client_cpu_s: float = 0.0  # this process's CPU time during the request (the client shares the cores)
    finish_reason: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds


def ask(server: Server, prompt: str, max_tokens: int, system: str | None = None, temperature: float = 0.0) -> Answer:
    """One chat request (greedy by default) through the official `openai` client, with SGLang's
    speculative stats. `system` replaces the chat template's default system prompt."""
    import openai

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": prompt}
    ]
    cpu0, t0 = time.process_time(), time.perf_counter()
    resp = client.chat.completions.create(
        model="default",
        messages=messages,
        temperature=temperature,
        max_tokens=max_tokens,
        extra_body={"return_spec_tokens_details": True},
    )
    seconds, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    spec = ((resp.model_extra or {}).get("sglext") or {}).get("spec_tokens_details")
    verify = int(spec.get("spec_verify_ct") or 0) if isinstance(spec, dict) else 0
    accept = spec.get("spec_accept_length") if verify else None
    correct = int(spec.get("spec_num_correct_drafts") or 0) if verify else 0
    return Answer(
        prompt,
        resp.choices[0].message.content,
        resp.usage.completion_tokens,
        seconds,
        accept,
        verify,
        correct,
        resp.usage.prompt_tokens,
        client_cpu,
        str(resp.choices[0].finish_reason),
    )
