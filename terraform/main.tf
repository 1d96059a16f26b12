data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}


# ---------------------------------------------------------------------------
# Sizing: node, shard and consumer counts come from numbers, not guesses.
# ---------------------------------------------------------------------------

module "sizing" {
  source = "./modules/sizing"

  peak_buyers_per_second = var.peak_buyers_per_second
  node_capacity_rps      = var.node_capacity_rps
  headroom               = var.headroom
  availability_zones     = length(var.private_subnet_ids)
  survive_zone_loss      = var.survive_zone_loss
  hot_sales              = var.hot_sales
  winners_per_second     = var.winners_per_second
  shard_capacity_ops     = var.shard_capacity_ops
  consumer_delivery_rate = var.consumer_delivery_rate
  store_bytes_per_winner = var.store_bytes_per_winner
  units_per_sale         = var.units_per_sale
  sales_in_store         = var.sales_in_store
  shard_memory_bytes     = var.store_node_memory_bytes
}

module "scale_up_time" {
  source    = "./modules/unix-time"
  timestamp = local.scale_up_at
}

module "scale_down_time" {
  source    = "./modules/unix-time"
  timestamp = local.scale_down_at
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  # MemoryDB user names are account-wide: one per deployment, never shared.
  store_user = coalesce(var.store_user_name, var.name)
  partition  = data.aws_partition.current.partition

  ssm_arn_prefix = "arn:${local.partition}:ssm:${var.aws_region}:${local.account_id}:parameter${var.ssm_parameter_prefix}"

  sale_node_count = coalesce(var.node_count_override, module.sizing.node_count)
  sale_node_max   = max(module.sizing.node_max, local.sale_node_count)

  # ---- schedule -------------------------------------------------------------
  # Pitfalls of scheduled actions, and how they are handled here:
  #  1. AWS rejects an action whose start time is in the past. The time between
  #     `plan` and `apply` also counts, so an action is only created when it
  #     starts at least schedule_margin after plantimestamp().
  #  2. A one-shot action disappears from AWS once it has run. A later plan
  #     sees it gone; because its time has passed, count is then 0 and nothing
  #     is recreated, so an apply after the sale does not fail.
  #  3. The ASG's own size follows the same clock: before the scale-down
  #     time it is the sized count, after it the idle count, so a plain apply
  #     never undoes (or fights) what the schedule did.
  now             = plantimestamp()
  schedule_margin = "10m"
  scale_up_at     = timeadd(var.sale_start, "-${var.scale_up_lead}")
  scale_down_at   = timeadd(var.sale_end, var.scale_down_delay)

  create_scale_up   = timecmp(local.scale_up_at, timeadd(local.now, local.schedule_margin)) > 0
  create_scale_down = timecmp(local.scale_down_at, timeadd(local.now, local.schedule_margin)) > 0

  # "After the sale" starts schedule_margin before the scale-down time: an
  # apply in those last minutes drops a still-pending scale-down action
  # (count 0), so the ASG itself must already be at the idle size.
  after_sale = !local.create_scale_down

  node_desired = local.after_sale ? var.idle_nodes : local.sale_node_count
  node_min     = local.node_desired
  node_max     = local.after_sale ? max(var.idle_nodes, length(var.private_subnet_ids)) : local.sale_node_max

  # The store endpoint the instances connect to (TLS, ACL user; the password is
  # fetched from SSM at boot and never passes through terraform).
  store_host = aws_memorydb_cluster.store.cluster_endpoint[0].address
  store_port = aws_memorydb_cluster.store.cluster_endpoint[0].port

  common_user_data = {
    region             = var.aws_region
    artifact_bucket    = var.artifact_bucket
    artifact_key       = var.artifact_key
    artifact_sha256    = var.artifact_sha256
    ssm_prefix         = var.ssm_parameter_prefix
    store_host         = local.store_host
    store_port         = local.store_port
    store_user         = local.store_user
    lease_ttl_ms       = var.lease_ttl_ms
    user_rate          = var.user_rate
    address_rate       = var.address_rate
    idle_timeout_ms    = var.node_idle_timeout_ms
    alb_idle_timeout_s = var.alb_idle_timeout_s
    liveness_failures  = var.liveness_failures
    liveness_grace_s   = var.liveness_grace_s
    orders_sink_url    = var.orders_sink_url
  }
}
