output "node_count" {
  description = "Desired number of `bigtap serve` nodes for the sale (a multiple of availability_zones)."
  value       = local.node_count
}

output "nodes_per_zone" {
  description = "Nodes in each availability zone."
  value       = local.nodes_per_zone
}

output "node_max" {
  description = "ASG max size: node_count plus one spare per zone for replacements."
  value       = local.node_max
}

output "store_shards" {
  description = "Store shards needed so that every hot sale's slot sits on a shard with room for it."
  value       = local.store_shards

  precondition {
    condition     = local.sale_fits_shard
    error_message = "One hot sale needs more store operations per second than one shard sustains (a sale lives in one hash slot, so more shards do not help): raise shard_capacity_ops with a bigger node type, or lower store_ops_per_node_per_sale (larger leases, fewer nodes)."
  }
}

output "store_cpu_utilization" {
  description = "Share of one store core the busiest shard uses at the peak, headroom included (Redis CPU per winner and per node-second as measured by loadtest/run, docs/scaling.md). At most store_cpu_target."
  value       = local.store_cpu_utilization

  precondition {
    condition     = local.sale_fits_shard_cpu
    error_message = "One hot sale needs more of a store core than store_cpu_target (a sale lives in one hash slot, so more shards do not help): fewer nodes per sale, a faster store core (measure store_cpu_us_per_winner on it), or a lower winners_per_second (a longer sell-out). See docs/scaling.md."
  }
}

output "store_winners_per_second_cap" {
  description = "Winners per second one hot sale can commit on one shard within store_cpu_target, with this fleet and headroom: the sale's ceiling whatever the front tier does."
  value       = local.store_winners_per_s_cap
}

output "store_memory_bytes" {
  description = "Store memory the launch's sales need at sell-out, headroom included (units_per_sale x store_bytes_per_winner x (1 + headroom) per sale)."
  value       = local.store_memory_bytes

  precondition {
    condition     = local.sale_fits_memory
    error_message = "One sale needs more memory than store_memory_fill of a shard (a sale lives in one hash slot, so more shards do not help): pick a store node type with more memory and set shard_memory_bytes to it."
  }
}

output "store_memory_utilization" {
  description = "Share of one shard's memory the fullest shard uses at sell-out (headroom included); the store-memory alarm fires well before 1."
  value       = local.store_memory_utilization
}

output "sales_per_shard" {
  description = "Hot sales one shard can hold; place sale ids so that no shard holds more (check with CLUSTER KEYSLOT)."
  value       = local.sales_per_shard
}

output "store_ops_per_second" {
  description = "Forecast store script calls per second at the peak, without headroom."
  value       = local.store_ops_per_second
}

output "consumer_count" {
  description = "Number of `bigtap orders` consumers."
  value       = local.consumer_count
}

output "peak_utilization" {
  description = "Share of the fleet's measured capacity used at the forecast peak with every node up."
  value       = local.peak_utilization
}

output "zone_loss_peak_utilization" {
  description = "Share of the remaining capacity used at the forecast peak after losing one zone (above 1 means the peak no longer fits)."
  value       = local.zone_loss_peak_utilization
}

output "summary" {
  description = "Everything above in one map, for `terraform output sizing`."
  value = {
    design_rps                 = local.design_rps
    node_count                 = local.node_count
    nodes_per_zone             = local.nodes_per_zone
    node_max                   = local.node_max
    store_shards               = local.store_shards
    sales_per_shard            = local.sales_per_shard
    store_memory_bytes         = local.store_memory_bytes
    store_memory_utilization   = local.store_memory_utilization
    store_ops_per_second       = local.store_ops_per_second
    store_cpu_utilization      = local.store_cpu_utilization
    store_winners_per_s_cap    = local.store_winners_per_s_cap
    consumer_count             = local.consumer_count
    peak_utilization           = local.peak_utilization
    zone_loss_peak_utilization = local.zone_loss_peak_utilization
  }
}
