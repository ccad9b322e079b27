"""How strong a cluster secret or API token is: a documented estimate, not a proof.

A credential must be random, and a value cannot show that it is; but it can show that it is not.
The rule (`weakness` says which part fails, never the value):

1. at least `MIN_CHARS` (32) characters;
2. not a shorter string repeated (`abcabc...`, `q7Zkq7Zk...`): its smallest period is more than
   half its length;
3. at least `MIN_BITS` (128) estimated bits, the estimate being the length times the smaller of
   two empirical Shannon entropies (bits per symbol, from the symbols' frequencies in the value):
   that of its characters (few distinct characters: `aaaa...`, `0101...`) and that of the steps
   between consecutive characters, as code point differences (runs such as `0123456789`,
   `abcdef...`, which use many characters but predictably).

`raftsched secret` (`secrets.token_urlsafe(32)`, 43 characters from 64) estimates at about 210
bits, and none of 200,000 draws came below 180. 64 hexadecimal digits (`openssl rand -hex 32`)
pass too; 32 hexadecimal digits estimate at about 110 bits and are refused. Passing proves no
randomness (a leaked value, or a phrase, can pass); the rule refuses what a person types when
asked for "a secret".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["MIN_BITS", "MIN_CHARS", "estimated_bits", "weakness"]

MIN_CHARS = 32
MIN_BITS = 128


def _shannon_bits(symbols: Iterable[object]) -> float:
    """The empirical entropy of `symbols`, in bits per symbol (0 for none)."""
    counts = Counter(symbols)
    total = sum(counts.values())
    return -sum(n / total * math.log2(n / total) for n in counts.values()) if total else 0.0


def _smallest_period(value: Sequence[str]) -> int:
    """The smallest p such that value[i] == value[i + p] for every i (the prefix function)."""
    border = [0] * (len(value) + 1)
    k = 0
    for i in range(1, len(value)):
        while k and value[i] != value[k]:
            k = border[k]
        if value[i] == value[k]:
            k += 1
        border[i + 1] = k
    return len(value) - border[len(value)]


def estimated_bits(value: str) -> float:
    """Rule 3's estimate: the length times the smaller entropy of characters and of steps."""
    steps = (ord(b) - ord(a) for a, b in zip(value, value[1:], strict=False))
    return len(value) * min(_shannon_bits(value), _shannon_bits(steps))


def weakness(value: str) -> str | None:
    """Why `value` is refused as a secret or token, in words that never include it; None if not."""
    if len(value) < MIN_CHARS:
        return f"too short ({len(value)} characters, at least {MIN_CHARS} needed)"
    if _smallest_period(value) * 2 <= len(value):
        return "too predictable: it repeats a shorter string"
    bits = estimated_bits(value)
    if bits < MIN_BITS:
        return (
            f"too predictable: an estimated {bits:.0f} bits of randomness, at least {MIN_BITS} needed "
            "(few distinct characters, or runs such as 0123 or abcd, lower it)"
        )
    return None
