"""Data group: sources, cleaning, dedup, tokenization, packing and shards."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rayloom.config._validate import fraction, non_negative, one_of, positive, require, safe_name

RECORD_SCHEMAS = ("text", "messages", "preference")
SOURCE_FORMATS = ("auto", "jsonl", "parquet", "text")
# How a plain-text file is cut into records.
TEXT_UNITS = ("file", "paragraph", "line")
# Parts of the offline demo corpus `data.demo` can generate as the job's source.
DEMO_KINDS = ("", "pretrain", "sft", "preference")
# Record ids keep 7 bits for the source (rayloom.data.record_ids): at most this many sources.
MAX_SOURCES = 128
# A source weight is copies per record: a larger one is a typo that would multiply the data.
MAX_SOURCE_WEIGHT = 100.0
# Record ids keep 35 bits for a record's position (byte offset or Parquet row) in its file.
MAX_FILE_BYTES_LIMIT = (1 << 35) - 1


@dataclass
class SourceConfig:
    # File or directory (read recursively, hidden and _-prefixed files skipped), local or s3://.
    path: str = "???"
    # auto -> by extension: .jsonl/.json/.ndjson (optionally .gz) -> jsonl, .parquet -> parquet, else text.
    format: str = "auto"
    schema: str = "text"
    # Sampling rate of this source in the mix: the expected number of copies of each kept record.
    # 1.0 takes every record once, 0.5 a deterministic half, 2.0 every record twice.
    weight: float = 1.0
    # Field holding the document in jsonl/parquet rows of the `text` schema.
    text_key: str = "text"
    # Plain-text files: one record per file, per blank-line separated paragraph, or per line.
    text_unit: str = "file"

    def __post_init__(self) -> None:
        one_of(self.format, SOURCE_FORMATS, "data.sources[].format")
        one_of(self.schema, RECORD_SCHEMAS, "data.sources[].schema")
        require(isinstance(self.weight, (int, float)) and math.isfinite(self.weight), "data.sources[].weight",
                "must be a finite number", self.weight)
        positive(self.weight, "data.sources[].weight")
        require(self.weight <= MAX_SOURCE_WEIGHT, "data.sources[].weight",
                f"at most {MAX_SOURCE_WEIGHT:g} copies per record", self.weight)
        require(bool(self.text_key), "data.sources[].text_key", "must not be empty", self.text_key)
        one_of(self.text_unit, TEXT_UNITS, "data.sources[].text_unit")
        require(self.format != "text" or self.schema == "text", "data.sources[].format",
                f"plain-text files hold `text` records, not {self.schema!r}", self.format)


@dataclass
class FilterConfig:
    unicode_form: str = "NFC"
    min_chars: int = 1
    max_chars: int = 100_000
    # Drop a record when duplicated lines, or its most repeated word 2/3/4-gram, cover more than
    # this fraction of its characters (Gopher-style repetition heuristics).
    max_repetition: float = 0.5
    # Drop a record whose fraction of non-alphanumeric, non-space characters exceeds this.
    max_symbol_fraction: float = 0.5
    # Drop a record when more than this fraction of its lines contain a boilerplate phrase.
    max_boilerplate_fraction: float = 0.3
    boilerplate_phrases: list[str] = field(default_factory=lambda: [
        "lorem ipsum", "all rights reserved", "enable javascript", "cookie policy", "terms of use",
        "click here", "subscribe to our newsletter",
    ])

    def __post_init__(self) -> None:
        one_of(self.unicode_form, ("NFC", "NFKC", "NFD", "NFKD", "none"), "data.filters.unicode_form")
        positive(self.min_chars, "data.filters.min_chars")
        require(self.max_chars >= self.min_chars, "data.filters.max_chars", "must be >= data.filters.min_chars",
                self.max_chars)
        fraction(self.max_repetition, "data.filters.max_repetition")
        fraction(self.max_symbol_fraction, "data.filters.max_symbol_fraction")
        fraction(self.max_boilerplate_fraction, "data.filters.max_boilerplate_fraction")


@dataclass
class DedupConfig:
    # Exact: a hash of the case- and whitespace-normalised content.
    exact: bool = True
    # Near: MinHash signatures of word shingles, matched with an LSH index over the whole dataset.
    near: bool = True
    # Jaccard similarity at or above which two records are near-duplicates.
    threshold: float = 0.8
    num_perm: int = 128
    # Shingle length in words.
    shingle_size: int = 5

    def __post_init__(self) -> None:
        fraction(self.threshold, "data.dedup.threshold")
        require(self.threshold > 0.0, "data.dedup.threshold", "must be > 0", self.threshold)
        positive(self.num_perm, "data.dedup.num_perm")
        require(self.num_perm >= 16, "data.dedup.num_perm", "use at least 16 permutations", self.num_perm)
        positive(self.shingle_size, "data.dedup.shingle_size")


@dataclass
class DataConfig:
    name: str = "demo"
    sources: list[SourceConfig] = field(default_factory=list)
    # Where shards + manifest are written; empty -> <storage.root>/data/<name>.
    output: str = ""
    # Bad rows with their reasons (JSON lines); empty -> <output>.quarantine.jsonl.
    quarantine: str = ""
    # Let the job replace an existing data.output that rayloom did not write (moved aside locally,
    # never deleted). A committed rayloom dataset there is replaced without it (older versions kept).
    overwrite: bool = False
    seq_len: int = 256
    packing: bool = True
    val_fraction: float = 0.05
    seed: int = 0
    max_bad_fraction: float = 0.1
    # A record (a JSONL line, a text line, paragraph or file) larger than this is quarantined
    # (`too_large`) without being held in memory whole.
    max_record_bytes: int = 8 * 1024 * 1024
    # A file that holds (or decompresses to) more than this is cut off there (`file_too_large`):
    # a gzip bomb is refused by reason, not by running a worker out of memory. At most 32 GiB.
    max_file_bytes: int = 8 * 1024 * 1024 * 1024
    # Input bytes per read block: uncompressed JSONL and line-text files are split into byte ranges
    # of this size, Parquet files into groups of row groups, each read and packed on its own;
    # gzip files and whole-file/paragraph text stream through one task in blocks of this size.
    read_block_bytes: int = 32 * 1024 * 1024
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    # Records per call into the fast tokenizer (its Rust backend batches them on its own threads).
    tokenize_batch_size: int = 256
    # Blocks of the select -> tokenize -> pack -> write stage in flight at once (Ray tasks; at most one
    # per input block). The name is from when the stage ran on an actor pool of this size.
    num_tokenize_actors: int = 2
    # Rows per Parquet shard: each input file's rows are packed together, then cut into shards of
    # this many rows (the last shard of a file is smaller).
    rows_per_shard: int = 4096
    # false -> `rayloom data` validates, quarantines and deduplicates, but tokenization and packing
    # run while training reads (open_shards streams straight from the raw sources).
    materialize: bool = True
    # Ray Data progress bars while the job runs.
    progress_bars: bool = True
    # Generate part of the offline demo corpus and use it as the only source ("" -> data.sources).
    demo: str = ""
    # demo corpus: how many generated instruction/preference records to build ...
    num_demo_records: int = 2000
    # ... and how many held-out prompts with answers to keep for evaluation.
    num_demo_eval: int = 200
    # demo=sft: also mix in the pre-training paragraphs, this many copies of each (a source weight;
    # 0 -> instruction records only). Text keeps the model's language while it learns the tasks.
    demo_text_weight: float = 0.0

    def __post_init__(self) -> None:
        safe_name(self.name, "data.name")
        positive(self.seq_len, "data.seq_len")
        require(self.seq_len >= 8, "data.seq_len", "must be at least 8 tokens", self.seq_len)
        fraction(self.val_fraction, "data.val_fraction", inclusive_high=False)
        fraction(self.max_bad_fraction, "data.max_bad_fraction")
        positive(self.tokenize_batch_size, "data.tokenize_batch_size")
        positive(self.num_tokenize_actors, "data.num_tokenize_actors")
        positive(self.rows_per_shard, "data.rows_per_shard")
        positive(self.num_demo_records, "data.num_demo_records")
        non_negative(self.num_demo_eval, "data.num_demo_eval")
        non_negative(self.demo_text_weight, "data.demo_text_weight")
        require(self.demo_text_weight <= MAX_SOURCE_WEIGHT, "data.demo_text_weight",
                f"at most {MAX_SOURCE_WEIGHT:g} copies per paragraph", self.demo_text_weight)
        require(self.demo_text_weight == 0 or self.demo in ("", "sft"), "data.demo_text_weight",
                "mixes pre-training text into the sft part only (data.demo=sft)", self.demo_text_weight)
        one_of(self.demo, DEMO_KINDS, "data.demo")
        require(len(self.sources) <= MAX_SOURCES, "data.sources", f"at most {MAX_SOURCES} sources per job "
                "(record ids hold the source in 7 bits); merge some", len(self.sources))
        positive(self.max_record_bytes, "data.max_record_bytes")
        positive(self.max_file_bytes, "data.max_file_bytes")
        require(self.max_file_bytes <= MAX_FILE_BYTES_LIMIT, "data.max_file_bytes",
                f"at most {MAX_FILE_BYTES_LIMIT} (record ids hold a position in 35 bits)", self.max_file_bytes)
        require(self.read_block_bytes >= 4096, "data.read_block_bytes", "must be at least 4096", self.read_block_bytes)
        schemas = {s.schema for s in self.sources}
        require("preference" not in schemas or schemas == {"preference"}, "data.sources",
                "preference sources cannot be mixed with text/messages sources in one dataset",
                sorted(schemas))
