"""LoRA adapters by name for Ray Serve LLM's multiplexing.

Ray Serve LLM routes "<model id>:<adapter>" requests to a replica with Serve's model
multiplexing and asks its `LoraModelLoader` for a local copy of the adapter, which vLLM then
loads. The stock loader only knows one cloud prefix holding every adapter; rayloom's adapters are
named in the config and live anywhere (a local directory from training, or an s3:// prefix).
This subclass looks the name up in that table, and otherwise under serve.lora_dynamic_path (the
adapter store), where adapters are committed artifacts: both are read through the commit marker
(adapters.fetch_adapter), which the stock loader, syncing the raw prefix, would not do. Caching,
eviction and the vLLM side stay the library's.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException

from rayloom import storage
from rayloom.errors import UserError
from rayloom.serve._ray_llm_compat import DiskMultiplexConfig, LoraModelLoader, get_lora_id, global_id_manager
from rayloom.serve.adapters import fetch_adapter


class NamedLoraLoader(LoraModelLoader):
    def __init__(self, *, adapters: dict[str, str], cache_dir: str, max_lora_rank: int,
                 download_timeout_s: float | None = None, max_tries: int = 1):
        super().__init__(download_timeout_s=download_timeout_s, max_tries=max_tries)
        self._adapters = dict(adapters)
        self._cache_dir = cache_dir
        self._max_lora_rank = max_lora_rank
        self._lock = asyncio.Lock()

    async def load_model_from_config(self, lora_model_id: str, llm_config) -> DiskMultiplexConfig:
        name = get_lora_id(lora_model_id)
        source = self._adapters.get(name)
        store = llm_config.lora_config.dynamic_lora_loading_path if llm_config.lora_config is not None else None
        if source is None and store:
            source = storage.join(store, name)
        if source is None:
            raise HTTPException(404, f"unknown LoRA adapter {name!r}; served adapters: {sorted(self._adapters)}")
        async with self._lock:  # one download per adapter, however many requests race for it
            if lora_model_id not in self.disk_cache:
                try:
                    local = await asyncio.to_thread(fetch_adapter, source, name, self._cache_dir,
                                                    self._max_lora_rank)
                except UserError as exc:
                    raise HTTPException(400, str(exc)) from None
                self.disk_cache[lora_model_id] = DiskMultiplexConfig(
                    model_id=lora_model_id, max_total_tokens=None, local_path=str(local),
                    lora_assigned_int_id=global_id_manager.next())
        return self.disk_cache[lora_model_id]
