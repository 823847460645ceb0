"""Data group: sources, cleaning, dedup, tokenization, packing and shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayloom.config._validate import fraction, one_of, positive, require

RECORD_SCHEMAS = ("text", "messages", "preference")
SOURCE_FORMATS = ("auto", "jsonl", "parquet", "text")


@dataclass
class SourceConfig:
    # File or directory, local or s3://.
    path: str = "???"
    format: str = "auto"
    schema: str = "text"
    # Relative sampling weight when several sources are mixed.
    weight: float = 1.0

    def __post_init__(self) -> None:
        one_of(self.format, SOURCE_FORMATS, "data.sources[].format")
        one_of(self.schema, RECORD_SCHEMAS, "data.sources[].schema")
        positive(self.weight, "data.sources[].weight")


@dataclass
class FilterConfig:
    unicode_form: str = "NFC"
    min_chars: int = 1
    max_chars: int = 100_000
    # Drop a record when its most repeated line/word n-gram covers more than this fraction.
    max_repetition: float = 0.5
    # Drop a record whose fraction of non-alphanumeric characters exceeds this.
    max_symbol_fraction: float = 0.5

    def __post_init__(self) -> None:
        one_of(self.unicode_form, ("NFC", "NFKC", "NFD", "NFKD", "none"), "data.filters.unicode_form")
        positive(self.min_chars, "data.filters.min_chars")
        require(self.max_chars >= self.min_chars, "data.filters.max_chars", "must be >= data.filters.min_chars",
                self.max_chars)
        fraction(self.max_repetition, "data.filters.max_repetition")
        fraction(self.max_symbol_fraction, "data.filters.max_symbol_fraction")


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    # Jaccard similarity above which two records are near-duplicates (MinHash + LSH).
    threshold: float = 0.8
    num_perm: int = 128
    shingle_size: int = 5

    def __post_init__(self) -> None:
        fraction(self.threshold, "data.dedup.threshold")
        positive(self.num_perm, "data.dedup.num_perm")
        positive(self.shingle_size, "data.dedup.shingle_size")


@dataclass
class DataConfig:
    name: str = "demo"
    sources: list[SourceConfig] = field(default_factory=list)
    # Where shards + manifest are written; empty -> <storage.root>/data/<name>.
    output: str = ""
    seq_len: int = 256
    packing: bool = True
    val_fraction: float = 0.05
    seed: int = 0
    max_bad_fraction: float = 0.1
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenize_batch_size: int = 256
    num_tokenize_actors: int = 2
    rows_per_shard: int = 4096
    # false -> stream straight from the raw sources into training without writing shards.
    materialize: bool = True
    # demo preset: how many generated instruction/preference records to build.
    num_demo_records: int = 2000

    def __post_init__(self) -> None:
        positive(self.seq_len, "data.seq_len")
        fraction(self.val_fraction, "data.val_fraction", inclusive_high=False)
        fraction(self.max_bad_fraction, "data.max_bad_fraction")
        positive(self.tokenize_batch_size, "data.tokenize_batch_size")
        positive(self.num_tokenize_actors, "data.num_tokenize_actors")
        positive(self.rows_per_shard, "data.rows_per_shard")
        positive(self.num_demo_records, "data.num_demo_records")
