"""Metric names that the dashboards and alerts read from servers other than the API.

Each entry: exported name -> (type, where the name is documented). Histograms
and summaries are listed by base name; the checker adds _bucket/_sum/_count.
Names were checked against the upstream source or documentation named here;
when an upstream renames a metric, update it here and in
deploy/grafana/build_dashboards.py / deploy/prometheus/alerts together.
"""

from __future__ import annotations

_VLLM = "vLLM docs usage/metrics + vllm/v1/metrics/loggers.py (PrometheusStatLogger)"
_VLLM_V0 = "vLLM v0 engine metrics (vllm/engine/metrics.py); still exported, deprecated, by early v1 releases"
_TRITON = "Triton docs/user_guide/metrics.md (metrics port 8002)"
_REDIS = "oliver006/redis_exporter exporter/exporter.go (namespace 'redis')"
_ES = "prometheus-community/elasticsearch_exporter README.md (metrics table)"
_PROMETHEUS = "Prometheus itself: synthetic series written for every scrape target"

UPSTREAM_METRICS: dict[str, tuple[str, str]] = {
    # --- vLLM (OpenAI-compatible server /metrics) ---
    "vllm:num_requests_running": ("gauge", _VLLM),
    "vllm:num_requests_waiting": ("gauge", _VLLM),
    "vllm:kv_cache_usage_perc": ("gauge", _VLLM),
    "vllm:gpu_cache_usage_perc": ("gauge", _VLLM_V0),
    "vllm:prompt_tokens_total": ("counter", _VLLM),
    "vllm:generation_tokens_total": ("counter", _VLLM),
    "vllm:num_preemptions_total": ("counter", _VLLM),
    "vllm:request_success_total": ("counter", _VLLM),
    "vllm:time_to_first_token_seconds": ("histogram", _VLLM),
    "vllm:time_per_output_token_seconds": ("histogram", _VLLM),
    "vllm:inter_token_latency_seconds": ("histogram", _VLLM),
    "vllm:e2e_request_latency_seconds": ("histogram", _VLLM),
    "vllm:request_queue_time_seconds": ("histogram", _VLLM),
    "vllm:iteration_tokens_total": ("histogram", _VLLM),
    # --- Triton Inference Server ---
    "nv_inference_request_success": ("counter", _TRITON),
    "nv_inference_request_failure": ("counter", _TRITON),
    "nv_inference_count": ("counter", _TRITON),
    "nv_inference_exec_count": ("counter", _TRITON),
    "nv_inference_request_duration_us": ("counter", _TRITON),
    "nv_inference_queue_duration_us": ("counter", _TRITON),
    "nv_inference_compute_infer_duration_us": ("counter", _TRITON),
    "nv_gpu_utilization": ("gauge", _TRITON),
    "nv_gpu_memory_total_bytes": ("gauge", _TRITON),
    "nv_gpu_memory_used_bytes": ("gauge", _TRITON),
    "nv_gpu_power_usage": ("gauge", _TRITON),
    "nv_cpu_utilization": ("gauge", _TRITON),
    "nv_cpu_memory_total_bytes": ("gauge", _TRITON),
    "nv_cpu_memory_used_bytes": ("gauge", _TRITON),
    # --- redis_exporter ---
    "redis_up": ("gauge", _REDIS),
    "redis_connected_clients": ("gauge", _REDIS),
    "redis_memory_used_bytes": ("gauge", _REDIS),
    "redis_memory_max_bytes": ("gauge", _REDIS),
    "redis_commands_processed_total": ("counter", _REDIS),
    "redis_commands_total": ("counter", _REDIS),
    "redis_commands_duration_seconds_total": ("counter", _REDIS),
    "redis_keyspace_hits_total": ("counter", _REDIS),
    "redis_keyspace_misses_total": ("counter", _REDIS),
    "redis_evicted_keys_total": ("counter", _REDIS),
    "redis_net_input_bytes_total": ("counter", _REDIS),
    "redis_net_output_bytes_total": ("counter", _REDIS),
    # --- elasticsearch_exporter ---
    "elasticsearch_cluster_health_status": ("gauge", _ES),
    "elasticsearch_indices_docs": ("gauge", _ES),
    "elasticsearch_indices_search_query_time_seconds": ("counter", _ES),
    "elasticsearch_indices_search_query_total": ("counter", _ES),
    "elasticsearch_indices_search_fetch_time_seconds": ("counter", _ES),
    "elasticsearch_indices_search_fetch_total": ("counter", _ES),
    "elasticsearch_indices_indexing_index_total": ("counter", _ES),
    "elasticsearch_indices_indexing_index_time_seconds_total": ("counter", _ES),
    "elasticsearch_jvm_memory_used_bytes": ("gauge", _ES),
    "elasticsearch_jvm_memory_max_bytes": ("gauge", _ES),
    "elasticsearch_transport_rx_size_bytes_total": ("counter", _ES),
    "elasticsearch_transport_tx_size_bytes_total": ("counter", _ES),
    # --- Prometheus ---
    "up": ("gauge", _PROMETHEUS),
    "scrape_duration_seconds": ("gauge", _PROMETHEUS),
}
