"""Knowledge aggregation (knowledge purification, arXiv 2602.01064): an aggregator LLM rewrites all teachers'
rationales of a question into one. The aggregator is a local transformers model, or any OpenAI-compatible chat
endpoint given by URL (the paper used GPT-4; its prompt is not public, so the prompt is a template in the config)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..generation import format_options, generate_texts
from ..purifier import with_purified_columns

DEFAULT_AGGREGATION_PROMPT = (
    "Several teachers explained the answer to a multiple-choice question. Write one explanation that keeps what "
    "supports the answer and drops what contradicts it.\n\nQuestion: {question}\nOptions: {options}\n"
    "Answer: {answer}\n\n{rationales}\n\nCombined explanation:"
)


class AggregationPurifier:
    """Args:
    teachers: teacher names, in the order of the data's `rationales`.
    model, tokenizer: a local aggregator; or
    endpoint: base URL of an OpenAI-compatible API (e.g. `http://127.0.0.1:8000/v1`), with `endpoint_model` and an
        optional `api_key`.
    prompt: template with `{question}`, `{options}`, `{answer}` and `{rationales}` (one "Teacher <name>: ..."
        line per available rationale).
    """

    method = "aggregation"

    def __init__(
        self,
        teachers: list[str],
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        endpoint: str | None = None,
        endpoint_model: str = "default",
        api_key: str | None = None,
        prompt: str = DEFAULT_AGGREGATION_PROMPT,
        max_new_tokens: int = 128,
        batch_size: int = 8,
    ):
        if (model is None) == (endpoint is None):
            raise ValueError("Give the aggregator either as a local model (model=, tokenizer=) or as endpoint=URL.")
        self.teachers, self.model, self.tokenizer = list(teachers), model, tokenizer
        self.endpoint, self.endpoint_model, self.api_key = endpoint, endpoint_model, api_key
        self.prompt, self.max_new_tokens, self.batch_size = prompt, max_new_tokens, batch_size

    @property
    def name(self) -> str:
        return self.endpoint_model if self.endpoint else self.model.config.name_or_path or type(self.model).__name__

    def prompts(self, dataset: Dataset) -> list[str]:
        return [
            self.prompt.format(
                question=row["question"],
                options=format_options(row["choices"]),
                answer=row["answer"],
                rationales="\n".join(
                    f"Teacher {t}: {r.strip()}"
                    for t, r in zip(self.teachers, row["rationales"], strict=True)
                    if r.strip()
                ),
            )
            for row in dataset
        ]

    def _chat(self, prompt: str) -> str:
        url = self.endpoint.rstrip("/") + "/chat/completions"
        body = {
            "model": self.endpoint_model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                reply = json.loads(response.read())
            return reply["choices"][0]["message"]["content"].strip()
        except (urllib.error.URLError, KeyError, IndexError, json.JSONDecodeError) as error:
            raise ValueError(f"The aggregator endpoint {url} gave no chat completion: {error}") from error

    def purify(self, dataset: Dataset) -> Dataset:
        prompts = self.prompts(dataset)
        if self.endpoint:
            texts = [self._chat(p) for p in prompts]
        else:
            texts = generate_texts(
                self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size, desc="aggregate"
            )
        empty = [not any(r.strip() for r in row) for row in dataset["rationales"]]
        columns = {
            "rationale": ["" if e else t for t, e in zip(texts, empty, strict=True)],
            "purified_teacher": ["" if e else "aggregate" for e in empty],
            "purified_score": [math.nan] * len(dataset),
            "purified_reason": [f"aggregation by {self.name}"] * len(dataset),
        }
        return with_purified_columns(dataset, columns)
