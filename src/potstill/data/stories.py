"""A documented generator of one-step arithmetic word problems (the demo's data).

Templates cover addition, subtraction, multiplication and exact division with names, objects
and numbers drawn from a seeded random generator, so the same seed always gives the same
problems. Each problem is a dict with `id`, `question`, `answer` (an integer), `op` and `expr`
(the reference arithmetic expression, e.g. "22 - 9").
"""

from __future__ import annotations

import random
from typing import Any

NAMES = [
    "Tom",
    "Anna",
    "Ben",
    "Maria",
    "Sam",
    "Lily",
    "Jack",
    "Emma",
    "Leo",
    "Mia",
    "Noah",
    "Zoe",
    "Omar",
    "Grace",
    "Ravi",
    "Nina",
]
PRONOUN = {
    "Tom": "He",
    "Ben": "He",
    "Sam": "He",
    "Jack": "He",
    "Leo": "He",
    "Noah": "He",
    "Omar": "He",
    "Ravi": "He",
    "Anna": "She",
    "Maria": "She",
    "Lily": "She",
    "Emma": "She",
    "Mia": "She",
    "Zoe": "She",
    "Grace": "She",
    "Nina": "She",
}
OBJECTS = [
    "apples",
    "stickers",
    "marbles",
    "pencils",
    "cookies",
    "books",
    "cards",
    "stamps",
    "balloons",
    "shells",
    "candies",
    "toy cars",
    "coins",
    "flowers",
    "beads",
    "eggs",
]
# (container, item) pairs for multiplication
GROUPS = [
    ("boxes", "pens"),
    ("bags", "apples"),
    ("packs", "cards"),
    ("jars", "candies"),
    ("baskets", "eggs"),
    ("shelves", "books"),
    ("trays", "cookies"),
    ("rows", "chairs"),
    ("boxes", "crayons"),
    ("vases", "flowers"),
]
# (item, recipients) for division
SHARES_PEOPLE = [
    ("cookies", "kids"),
    ("stickers", "friends"),
    ("pencils", "students"),
    ("cards", "players"),
    ("candies", "children"),
    ("stamps", "classmates"),
]
SHARES_BOXES = [
    ("apples", "baskets"),
    ("marbles", "bags"),
    ("books", "shelves"),
    ("beads", "boxes"),
    ("coins", "jars"),
    ("flowers", "vases"),
]

ADD_T = [
    "{n} has {a} {o}. {P} buys {b} more. How many {o} does {p} have now?",
    "{n} had {a} {o}. A friend gave {p2} {b} more {o}. How many {o} does {n} have in total?",
    "There are {a} {o} in a box. {n} puts {b} more {o} in the box. "
    "How many {o} are in the box now?",
    "{n} collected {a} {o} on Monday and {b} {o} on Tuesday. "
    "How many {o} did {p} collect altogether?",
]
SUB_T = [
    "{n} has {a} {o}. {P} gives away {b} of them. How many {o} does {p} have left?",
    "{n} had {a} {o}. {P} lost {b} {o}. How many {o} does {p} have now?",
    "There were {a} {o} on the table. {n} took {b} of them. How many {o} are still on the table?",
    "{n} bought {a} {o} and used {b} of them. How many {o} are left?",
]
MUL_T = [
    "{n} has {a} {c} with {b} {i} each. How many {i} does {p} have in total?",
    "There are {a} {c}. Each of them holds {b} {i}. How many {i} are there altogether?",
    "{n} buys {a} {c} of {i}. Every one has {b} {i} in it. How many {i} did {p} buy?",
    "A store has {a} {c}, and each has {b} {i}. How many {i} does the store have?",
]
# (template, recipient kind)
DIV_T = [
    ("{a} {i} are shared equally among {b} {r}. How many {i} does each of the {r} get?", "people"),
    ("{n} has {a} {i} and puts them equally into {b} {r}. How many {i} go into each one?", "boxes"),
    ("{n} splits {a} {i} evenly between {b} {r}. How many {i} does each get?", "people"),
    (
        "There are {a} {i}. They are divided equally among {b} {r}. "
        "How many {i} are there for each?",
        "boxes",
    ),
]
OPS = ["add", "sub", "mul", "div"]


def _one(rng: random.Random, op: str) -> tuple[str, int, str]:
    n = rng.choice(NAMES)
    P = PRONOUN[n]
    p = P.lower()
    p2 = "him" if P == "He" else "her"
    if op == "add":
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        q = rng.choice(ADD_T).format(n=n, P=P, p=p, p2=p2, a=a, b=b, o=rng.choice(OBJECTS))
        return q, a + b, f"{a} + {b}"
    if op == "sub":
        a = rng.randint(3, 60)
        b = rng.randint(2, a - 1)
        q = rng.choice(SUB_T).format(n=n, P=P, p=p, a=a, b=b, o=rng.choice(OBJECTS))
        return q, a - b, f"{a} - {b}"
    if op == "mul":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        c, i = rng.choice(GROUPS)
        q = rng.choice(MUL_T).format(n=n, p=p, a=a, b=b, c=c, i=i)
        return q, a * b, f"{a} * {b}"
    if op == "div":
        while True:
            b = rng.randint(2, 12)
            k = rng.randint(2, 12)
            a = b * k
            if a <= 60:
                break
        t, kind = rng.choice(DIV_T)
        i, r = rng.choice(SHARES_PEOPLE if kind == "people" else SHARES_BOXES)
        q = t.format(n=n, a=a, b=b, i=i, r=r)
        return q, k, f"{a} / {b}"
    raise ValueError(op)


def make_problems(n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """`n` problems, the four operations in equal shares, in a seeded order."""
    rng = random.Random(seed)
    ops = [OPS[k % 4] for k in range(n)]
    rng.shuffle(ops)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for op in ops:
        q, ans, expr = _one(rng, op)
        while q in seen:  # no question twice, so no test item is also a training item
            q, ans, expr = _one(rng, op)
        seen.add(q)
        out.append(
            {"id": f"s{seed}-{len(out):05d}", "question": q, "answer": ans, "op": op, "expr": expr}
        )
    return out
