locals {
  # ---- front tier -------------------------------------------------------
  # Requests per second the fleet must answer, headroom included.
  design_rps = var.peak_buyers_per_second * (1 + var.headroom)

  # Nodes that carry design_rps when every one of them is up.
  nodes_for_load = ceil(local.design_rps / var.node_capacity_rps)

  # Zones that must carry the load: all of them, or all but one when the
  # fleet must survive the loss of a zone.
  carrying_zones = var.survive_zone_loss ? var.availability_zones - 1 : var.availability_zones

  # Every zone gets the same number of nodes (the ALB spreads evenly across
  # zones), so round up per zone rather than for the fleet.
  nodes_per_zone = max(
    ceil(local.nodes_for_load / local.carrying_zones),
    ceil(var.min_nodes / var.availability_zones),
  )
  node_count = local.nodes_per_zone * var.availability_zones

  # Room for the ASG to replace unhealthy nodes before terminating them.
  node_max = local.node_count + var.availability_zones

  # ---- store ------------------------------------------------------------
  # Script calls per second at the peak: winners drive admit/confirm/consumer
  # traffic; every node also keeps background traffic per hot sale.
  store_ops_per_second = (
    var.winners_per_second * var.store_ops_per_winner +
    local.node_count * var.hot_sales * var.store_ops_per_node_per_sale
  )
  design_store_ops = local.store_ops_per_second * (1 + var.headroom)

  # A sale lives in one hash slot, hence on one shard: its load cannot be
  # split. Size by how many hot sales one shard can hold.
  per_sale_ops    = local.design_store_ops / var.hot_sales
  sale_fits_shard = local.per_sale_ops <= var.shard_capacity_ops
  sales_per_shard = max(1, floor(var.shard_capacity_ops / max(local.per_sale_ops, 1)))
  shards_for_ops  = ceil(var.hot_sales / local.sales_per_shard)

  # Memory: a sale's keys live in one slot, so one sale must fit one shard
  # (within store_memory_fill), and the shards together must hold every sale
  # the store keeps. Headroom covers a forecast that undercounts.
  bytes_per_sale      = var.units_per_sale * var.store_bytes_per_winner * (1 + var.headroom)
  shard_usable_bytes  = var.shard_memory_bytes * var.store_memory_fill
  sale_fits_memory    = local.bytes_per_sale <= local.shard_usable_bytes
  sales_per_shard_mem = max(1, floor(local.shard_usable_bytes / local.bytes_per_sale))
  shards_for_memory   = ceil(max(var.sales_in_store, var.hot_sales) / local.sales_per_shard_mem)
  store_memory_bytes  = max(var.sales_in_store, var.hot_sales) * local.bytes_per_sale

  # CPU: one core per shard does all of a sale's work. A winner costs a
  # base figure plus a share for every node (each node reads each winner's
  # stream entry); every node also costs background work per second. Both
  # come from loadtest/run (docs/scaling.md).
  store_cpu_us_per_sale_winner = var.store_cpu_us_per_winner + var.store_cpu_us_per_winner_per_node * local.node_count
  store_cpu_us_per_sale_second = (
    var.winners_per_second / var.hot_sales * local.store_cpu_us_per_sale_winner +
    local.node_count * var.store_cpu_us_per_node_second
  ) * (1 + var.headroom)
  # Share of one core a hot sale needs at the peak, headroom included.
  store_cpu_per_sale      = local.store_cpu_us_per_sale_second / 1000000
  sale_fits_shard_cpu     = local.store_cpu_per_sale <= var.store_cpu_target
  sales_per_shard_cpu     = max(1, floor(var.store_cpu_target / max(local.store_cpu_per_sale, 0.000001)))
  shards_for_cpu          = ceil(var.hot_sales / local.sales_per_shard_cpu)
  store_winners_per_s_cap = (var.store_cpu_target * 1000000 / (1 + var.headroom) - local.node_count * var.store_cpu_us_per_node_second) / local.store_cpu_us_per_sale_winner

  store_shards = max(local.shards_for_ops, local.shards_for_memory, local.shards_for_cpu)
  # Share of one core used by the busiest shard at the peak (headroom included).
  store_cpu_utilization = ceil(var.hot_sales / local.store_shards) * local.store_cpu_per_sale
  # Share of one shard's memory used by the fullest shard at the plan's end.
  store_memory_utilization = ceil(max(var.sales_in_store, var.hot_sales) / local.store_shards) * local.bytes_per_sale / var.shard_memory_bytes

  # ---- consumers ----------------------------------------------------------
  consumer_count = max(
    var.min_consumers,
    ceil(var.winners_per_second * (1 + var.headroom) / var.consumer_delivery_rate),
  )

  # ---- what the plan means at the peak --------------------------------------
  peak_utilization           = var.peak_buyers_per_second / (local.node_count * var.node_capacity_rps)
  zone_loss_peak_utilization = var.peak_buyers_per_second / ((local.node_count - local.nodes_per_zone) * var.node_capacity_rps)
}
