"""Names for containers created without one, in dockerd's style (``adjective_surname``).

dockerd names such a container itself. Moorage names it before the create instead, so that the
name goes down with the project's suffix at once: no inspect and rename after the create (two
round trips on every unnamed `docker run`), and no moment at which the daemon holds a name
without the suffix (a create that failed after dockerd made the container could leave one, and
another project's later container could be given the same). The words are Moorage's own; the
shape, the underscore and the retries with a digit are dockerd's (its namesgenerator).
"""

from __future__ import annotations

import secrets

ADJECTIVES = (
    "able", "amazing", "ardent", "awesome", "blissful", "bold", "brave", "bright", "busy",
    "calm", "careful", "charming", "cheerful", "clever", "cool", "curious", "daring", "dazzling",
    "determined", "eager", "earnest", "elated", "elegant", "epic", "fervent", "fond", "friendly",
    "gallant", "gentle", "gifted", "glad", "happy", "hardcore", "hopeful", "humble", "inspiring",
    "jolly", "keen", "kind", "lively", "loving", "lucid", "magical", "merry", "modest", "musing",
    "nice", "nimble", "optimistic", "patient", "peaceful", "placid", "pleasant", "proud",
    "quiet", "quirky", "relaxed", "resolute", "serene", "sharp", "sleepy", "steady", "stoic",
    "sunny", "swift", "tender", "thirsty", "tidy", "upbeat", "vibrant", "vigilant", "wise",
    "witty", "zealous",
)  # fmt: skip

# People of science and engineering.
SURNAMES = (
    "agnesi", "al_khwarizmi", "babbage", "bardeen", "bartik", "bell", "bohr", "boole", "borg",
    "cannon", "cerf", "curie", "darwin", "dijkstra", "einstein", "euler", "faraday", "fermat",
    "fermi", "feynman", "franklin", "galileo", "gauss", "goldberg", "goodall", "hamilton",
    "hawking", "heisenberg", "hodgkin", "hopper", "hypatia", "johnson", "kepler", "knuth",
    "kowalevski", "lamarr", "leavitt", "lovelace", "maxwell", "meitner", "mendel", "mirzakhani",
    "newton", "noether", "pascal", "pasteur", "perlman", "planck", "ritchie", "shannon",
    "somerville", "tesla", "thompson", "torvalds", "turing", "volta", "wilson", "wozniak",
    "yalow", "zuse",
)  # fmt: skip

# How many names a create tries before it gives up, as dockerd does.
ATTEMPTS = 6


def random_name(attempt: int = 0) -> str:
    """A random ``adjective_surname``; from the second attempt on, with a digit appended."""
    name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
    return f"{name}{secrets.randbelow(10)}" if attempt else name
