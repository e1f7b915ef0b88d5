"""Labelled datasets for probes: built-in generators and uploaded JSONL/CSV, validated and bounded.

A row is a `text` to read (at one position, the last token by default) and its `label`; optionally
a task `prompt` and its correct `answer`, so task accuracy can be measured beside the probe. A
dataset also says which token each label is, when the model can say it itself (`label_tokens`):
that is what self-verification reads.
"""

import csv
import io
import json
import random

from pydantic import BaseModel, Field, ValidationError, field_validator

from ..errors import InvalidInput, TooLong

MAX_ROWS = 2000
MAX_TEXT_CHARS = 400
MAX_UPLOAD_BYTES = 1_000_000
MIN_PER_LABEL = 5  # k-fold CV needs this many rows of each label


class Row(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="What the model reads.")
    label: str = Field(min_length=1, max_length=64, description="The class of `text`, e.g. `Y`/`N`.")
    prompt: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="A task prompt, e.g. `12+34=`.")
    answer: str | None = Field(None, max_length=64, description="The correct continuation of `prompt`.")

    @field_validator("label", mode="before")
    @classmethod
    def _label_as_text(cls, value: object) -> object:
        return str(value).lower() if isinstance(value, bool) else str(value) if isinstance(value, int) else value


class Dataset(BaseModel):
    rows: list[Row]
    label_tokens: dict[str, str] = Field(
        default_factory=dict, description="Label -> the text the model would say for it (its first token is read)."
    )


def json_line(line: str, number: int) -> object:
    """One JSONL line, parsed; ValueError naming the line when it is not JSON or nests too deeply
    for the parser (200,000 brackets), which is no row of any dataset."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {number} is not JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"line {number} is nested too deeply to be a row") from None


def check_rows(rows: list[Row]) -> list[Row]:
    """The rows, or InvalidInput/TooLong saying what a probe could not use."""
    if len(rows) > MAX_ROWS:
        raise TooLong(f"The dataset has {len(rows)} rows; at most {MAX_ROWS} are accepted.")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.label] = counts.get(row.label, 0) + 1
    if len(counts) < 2:
        raise InvalidInput("A probe needs at least two different labels.")
    if (rare := min(counts, key=counts.get)) and counts[rare] < MIN_PER_LABEL:
        raise InvalidInput(f"Label {rare!r} has {counts[rare]} rows; each label needs at least {MIN_PER_LABEL}.")
    if any((row.prompt is None) != (row.answer is None) for row in rows):
        raise InvalidInput("`prompt` and `answer` go together: give both or neither.")
    return rows


# --- addition: the embedded looped model's task ------------------------------------------------


def addition_prompt(a: int, b: int, digits: int) -> str:
    """`a+b=` with zero-padded operands, e.g. `12+05=`."""
    return f"{a:0{digits}d}+{b:0{digits}d}="


def addition_answer(total: int, digits: int) -> str:
    """The sum as the model writes it: digits+1 wide, zero-padded, least significant digit first
    (so each digit needs only the carry from the one written before it): 17 -> `710`."""
    return f"{total:0{digits + 1}d}"[::-1]


def corrupted_sum(total: int, digits: int, rng: random.Random) -> int:
    """A wrong sum that looks right: one written digit changed, or off by a power of ten below
    10**digits (a slipped carry)."""
    limit = 10 ** (digits + 1)
    while True:
        if rng.random() < 0.5:
            place = 10 ** rng.randrange(digits + 1)
            digit = (total // place) % 10
            wrong = total + (rng.choice([d for d in range(10) if d != digit]) - digit) * place
        else:
            wrong = total + rng.choice([-1, 1]) * 10 ** rng.randrange(digits)
        if 0 <= wrong < limit and wrong != total:
            return wrong


def addition_example(a: int, b: int, correct: bool, digits: int, rng: random.Random) -> Row:
    """`a+b=c?` labelled Y if c = a+b else N, with the generation prompt `a+b=` and its answer."""
    total = a + b
    shown = total if correct else corrupted_sum(total, digits, rng)
    prompt = addition_prompt(a, b, digits)
    return Row(
        text=f"{prompt}{addition_answer(shown, digits)}?",
        label="Y" if correct else "N",
        prompt=prompt,
        answer=addition_answer(total, digits),
    )


def addition(n: int, seed: int, digits: int = 2) -> Dataset:
    """n balanced verification rows of the embedded looped model's task, `a+b=c?` with the sum
    written least significant digit first (Y: the shown sum is right, N: wrong)."""
    rng = random.Random(seed)
    rows = [
        addition_example(rng.randrange(10**digits), rng.randrange(10**digits), i % 2 == 0, digits, rng)
        for i in range(n)
    ]
    return Dataset(rows=rows, label_tokens={"Y": "Y", "N": "N"})


# --- arithmetic statements: usable on any language model -----------------------------------------


def arithmetic_statements(n: int, seed: int, max_operand: int = 50) -> Dataset:
    """n balanced statements `a + b = c.` in plain English, half true (c = a+b), half off by 1..10;
    the model is asked `True or false?`. Prompt/answer: `a + b =` / ` a+b` for task accuracy."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        correct = i % 2 == 0
        c = a + b if correct else a + b + rng.choice([-1, 1]) * rng.randint(1, 10)
        rows.append(
            Row(
                text=f"{a} + {b} = {c}. True or false? The statement is",
                label="true" if correct else "false",
                prompt=f"{a} + {b} =",
                answer=f" {a + b}",
            )
        )
    return Dataset(rows=rows, label_tokens={"true": " true", "false": " false"})


BUILT_IN = {"addition": addition, "arithmetic_statements": arithmetic_statements}


# --- uploads -----------------------------------------------------------------------------------


def parse_upload(content: str, fmt: str) -> list[Row]:
    """Rows from JSONL (one object per line) or CSV (a header with `text,label`, optionally
    `prompt,answer`). Raises InvalidInput naming the first bad line."""
    if len(content.encode()) > MAX_UPLOAD_BYTES:
        raise TooLong(f"The upload is over {MAX_UPLOAD_BYTES // 1000} kB.")
    if fmt == "jsonl":
        records = []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json_line(line, number)))
            except ValueError as exc:
                raise InvalidInput(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(content))
        try:  # the header row is read lazily, by `fieldnames`: a malformed one raises there too
            if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
                raise InvalidInput("The CSV needs a header row with `text` and `label` columns.")
            records = [(number, record) for number, record in enumerate(reader, start=2)]
        except csv.Error as exc:
            raise InvalidInput(f"The CSV could not be read: {exc}.") from None
    else:
        raise InvalidInput(f"Unknown format {fmt!r}; use `jsonl` or `csv`.")
    rows = []
    for number, record in records:
        if len(rows) >= MAX_ROWS:
            raise TooLong(f"The dataset has more than {MAX_ROWS} rows.")
        if not isinstance(record, dict):
            raise InvalidInput(f"Line {number} is not an object with `text` and `label`.")
        fields = {key: None if record.get(key) in ("", None) else record.get(key) for key in ("text", "label", "prompt", "answer")}
        try:
            rows.append(Row.model_validate(fields))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"Line {number}, {'.'.join(map(str, first['loc']))}: {first['msg']}.") from None
    return check_rows(rows)
