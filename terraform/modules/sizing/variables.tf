# Inputs of the sizing model. Every figure is a measurement or a business
# forecast, never a guess about machines: the per-node capacity comes from
# `loadtest/run`, the peak from the sale's marketing forecast.

variable "peak_buyers_per_second" {
  description = "Expected peak of buyer requests per second (POST /v1/sales/{sale}/tickets plus sale status polls), summed over all concurrent sales."
  type        = number

  validation {
    condition     = var.peak_buyers_per_second > 0 && var.peak_buyers_per_second <= 50000000
    error_message = "peak_buyers_per_second must be > 0 and <= 50,000,000 (beyond that, split the sale across regions)."
  }
}

variable "node_capacity_rps" {
  description = "Requests per second one `bigtap serve` node answers within its latency objective, as printed by `loadtest/run` on the instance type being deployed."
  type        = number

  validation {
    condition     = var.node_capacity_rps >= 100 && var.node_capacity_rps <= 2000000
    error_message = "node_capacity_rps must be between 100 and 2,000,000; run loadtest/run on the target instance type and use its req/s per node figure."
  }
}

variable "headroom" {
  description = "Spare capacity above the forecast peak, as a fraction: 0.5 sizes the fleet for 1.5x the peak. Covers forecast error and retry storms."
  type        = number
  default     = 0.5

  validation {
    condition     = var.headroom >= 0.2 && var.headroom <= 4
    error_message = "headroom must be between 0.2 (20% spare) and 4 (5x the forecast); a fleet sized at exactly the peak falls over at the first retry storm."
  }
}

variable "availability_zones" {
  description = "Number of availability zones the fleet spreads over. Node counts are rounded up to a multiple of it so every zone holds the same share."
  type        = number
  default     = 3

  validation {
    condition     = var.availability_zones >= 2 && var.availability_zones <= 6 && floor(var.availability_zones) == var.availability_zones
    error_message = "availability_zones must be a whole number from 2 to 6."
  }
}

variable "survive_zone_loss" {
  description = "Size the fleet so that the remaining zones still carry the peak (with headroom) when one zone is lost."
  type        = bool
  default     = true
}

variable "min_nodes" {
  description = "Floor for the front tier, whatever the forecast."
  type        = number
  default     = 2

  validation {
    condition     = var.min_nodes >= 2 && floor(var.min_nodes) == var.min_nodes
    error_message = "min_nodes must be a whole number >= 2: one node is a single point of failure."
  }
}

variable "hot_sales" {
  description = "Number of sales expected to be hot at the same moment. Each sale's keys live in one hash slot, so one sale is served by exactly one store shard."
  type        = number
  default     = 1

  validation {
    condition     = var.hot_sales >= 1 && var.hot_sales <= 500 && floor(var.hot_sales) == var.hot_sales
    error_message = "hot_sales must be a whole number from 1 to 500."
  }
}

variable "winners_per_second" {
  description = "Expected peak of winners per second over all sales (rate(bigtap_commits_total{result=\"won\"})): roughly the stock divided by the seconds it takes to sell out."
  type        = number

  validation {
    condition     = var.winners_per_second > 0
    error_message = "winners_per_second must be > 0."
  }
}

variable "store_ops_per_winner" {
  description = "Store script calls caused by one winner: admit, the consumer's read and ack, the backend's confirm or release."
  type        = number
  default     = 4

  validation {
    condition     = var.store_ops_per_winner >= 1 && var.store_ops_per_winner <= 50
    error_message = "store_ops_per_winner must be between 1 and 50."
  }
}

variable "store_ops_per_node_per_sale" {
  description = "Background store calls per second that each node makes per hot sale: lease, renew, return, winner-replica tail, sweeps."
  type        = number
  default     = 10

  validation {
    condition     = var.store_ops_per_node_per_sale >= 0 && var.store_ops_per_node_per_sale <= 1000
    error_message = "store_ops_per_node_per_sale must be between 0 and 1000."
  }
}

variable "shard_capacity_ops" {
  description = "Script calls per second one store shard sustains within its latency objective (measure it; a durable store acknowledges writes only after its transaction log commit)."
  type        = number
  default     = 20000

  validation {
    condition     = var.shard_capacity_ops >= 1000
    error_message = "shard_capacity_ops must be >= 1000."
  }
}

variable "consumer_delivery_rate" {
  description = "Winners per second one `bigtap orders` consumer delivers to the order backend (bounded by the backend's latency and the consumer's concurrency)."
  type        = number
  default     = 200

  validation {
    condition     = var.consumer_delivery_rate > 0
    error_message = "consumer_delivery_rate must be > 0."
  }
}

variable "min_consumers" {
  description = "Floor for the consumer group, whatever the forecast."
  type        = number
  default     = 2

  validation {
    condition     = var.min_consumers >= 1 && floor(var.min_consumers) == var.min_consumers
    error_message = "min_consumers must be a whole number >= 1."
  }
}

# ---- store memory -----------------------------------------------------------

variable "store_bytes_per_winner" {
  description = "Store memory one sold unit costs (ticket, commit record, order-stream entry, indexes), in bytes, as measured by `loadtest/run` (its report prints \"store bytes per winner\": the growth of Redis used_memory over the run divided by the units sold)."
  type        = number
  default     = 2048

  validation {
    condition     = var.store_bytes_per_winner >= 64 && var.store_bytes_per_winner <= 1048576
    error_message = "store_bytes_per_winner must be between 64 and 1 MiB; take it from a loadtest/run report."
  }
}

variable "units_per_sale" {
  description = "Stock of the largest sale of the launch (units that can be won)."
  type        = number
  default     = 100000

  validation {
    condition     = var.units_per_sale >= 1 && floor(var.units_per_sale) == var.units_per_sale
    error_message = "units_per_sale must be a whole number >= 1."
  }
}

variable "sales_in_store" {
  description = "Sales whose data the store holds at once: every sale of the launch stays in the store until teardown (the audit reads it). At least hot_sales."
  type        = number
  default     = 1

  validation {
    condition     = var.sales_in_store >= 1 && floor(var.sales_in_store) == var.sales_in_store
    error_message = "sales_in_store must be a whole number >= 1."
  }
}

variable "shard_memory_bytes" {
  description = "Memory of one store node (MemoryDB node type), in bytes. db.r7g.xlarge: 26.32 GiB = 28260695490 bytes."
  type        = number
  default     = 28260695490

  validation {
    condition     = var.shard_memory_bytes >= 1073741824
    error_message = "shard_memory_bytes must be at least 1 GiB."
  }
}

variable "store_memory_fill" {
  description = "Largest share of a shard's memory the plan may fill. With noeviction a full store refuses writes and the sale stops, so keep room for fragmentation, replication buffers and the forecast's error."
  type        = number
  default     = 0.6

  validation {
    condition     = var.store_memory_fill > 0 && var.store_memory_fill <= 0.8
    error_message = "store_memory_fill must be in (0, 0.8]."
  }
}

# ---- store CPU --------------------------------------------------------------
# A sale's keys share one hash slot, so one Redis core (a shard's primary runs
# commands on one thread) does all of a sale's work. The figures come from
# `loadtest/run --fan-out 1,4,8,16` (docs/scaling.md): Redis CPU
# (used_cpu_sys + used_cpu_user) over a run divided by the winners it
# committed, and the idle fleet's background per node-second. The defaults
# are that command's figures on a 2-core x86 VM with redis-server 7.0.15,
# appendfsync always (the per-node-second figure is the highest of three
# runs on 2026-12-01 after a node's view came to ride with its digest read,
# 252, 264 and 330 µs: it is a small difference of noisy numbers); measure
# on the store's instance class before a launch.

variable "store_cpu_us_per_winner" {
  description = "Redis CPU one committed winner costs with a fleet of one node, in microseconds: the fan-out fit's cost at zero nodes from `loadtest/run --fan-out` (or \"Redis CPU per winner\" of `--vs-naive`). Measured on the deployed store's instance class when possible: a faster core lowers it."
  type        = number
  default     = 13.2

  validation {
    condition     = var.store_cpu_us_per_winner > 0 && var.store_cpu_us_per_winner <= 10000
    error_message = "store_cpu_us_per_winner must be > 0 and <= 10,000 µs; take it from a loadtest/run --vs-naive or --fan-out report."
  }
}

variable "store_cpu_us_per_winner_per_node" {
  description = "Redis CPU each further node adds to every winner, in microseconds (each node reads 8 bytes of the winners digest per winner): the slope of the fan-out fit of `loadtest/run --fan-out`."
  type        = number
  default     = 0.01

  validation {
    condition     = var.store_cpu_us_per_winner_per_node >= 0 && var.store_cpu_us_per_winner_per_node <= 1000
    error_message = "store_cpu_us_per_winner_per_node must be between 0 and 1,000 µs."
  }
}

variable "store_cpu_us_per_node_second" {
  description = "Redis CPU an idle node costs per hot sale and second while buyers ask it about the sale, as at a launch, in microseconds (its polls of the sale, lease upkeep, sale discovery): \"idle fleet, asked: Redis CPU per node-second\" of `loadtest/run --fan-out`. A node nobody has asked for two seconds costs less (the sale is dormant there; docs/scaling.md)."
  type        = number
  default     = 330

  validation {
    condition     = var.store_cpu_us_per_node_second >= 0 && var.store_cpu_us_per_node_second <= 100000
    error_message = "store_cpu_us_per_node_second must be between 0 and 100,000 µs."
  }
}

variable "store_cpu_target" {
  description = "Largest share of one store core the plan lets one shard use at the peak (headroom included). Above it commits queue and buyers get 503s; keep room for the consumers, confirms, sweeps and fsync stalls."
  type        = number
  default     = 0.5

  validation {
    condition     = var.store_cpu_target > 0 && var.store_cpu_target <= 0.9
    error_message = "store_cpu_target must be in (0, 0.9]: a core at 100% already queues every commit."
  }
}
