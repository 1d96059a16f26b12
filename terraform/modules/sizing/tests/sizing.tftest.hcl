# Plan-only tests of the sizing arithmetic. The module has no provider, so
# `terraform init && terraform test` runs offline.

variables {
  peak_buyers_per_second = 1000000
  node_capacity_rps      = 50000
  winners_per_second     = 2000

  # Store CPU figures of the tests' own choosing, so that remeasured module
  # defaults do not change what these tests assert.
  store_cpu_us_per_winner          = 20
  store_cpu_us_per_winner_per_node = 1
  store_cpu_us_per_node_second     = 1000
}

run "launch_of_one_hot_sale" {
  command = plan

  # 1.5M req/s design load / 50k = 30 nodes; two of three zones must carry
  # them after a zone loss: 15 per zone, 45 in all.
  assert {
    condition     = output.node_count == 45 && output.nodes_per_zone == 15
    error_message = "expected 45 nodes (15 per zone), got ${output.node_count} (${output.nodes_per_zone} per zone)"
  }
  assert {
    condition     = output.node_max == 48
    error_message = "expected node_max 48, got ${output.node_max}"
  }
  # 2000 winners x 4 + 45 nodes x 10 = 8450 ops/s; x1.5 fits one shard.
  assert {
    condition     = output.store_ops_per_second == 8450 && output.store_shards == 1
    error_message = "expected 8450 ops/s on 1 shard, got ${output.store_ops_per_second} on ${output.store_shards}"
  }
  assert {
    condition     = output.consumer_count == 15
    error_message = "expected 15 consumers (3000 winners/s with headroom / 200), got ${output.consumer_count}"
  }
  assert {
    condition     = output.zone_loss_peak_utilization <= 1 / 1.5 + 0.0001
    error_message = "after a zone loss the fleet must still keep the headroom"
  }
}

run "no_zone_loss_and_two_zones" {
  command = plan

  variables {
    peak_buyers_per_second = 100000
    node_capacity_rps      = 40000
    headroom               = 0.25
    availability_zones     = 2
    survive_zone_loss      = false
    winners_per_second     = 100
  }

  # 125k / 40k = 3.125 -> 4 nodes, 2 per zone.
  assert {
    condition     = output.node_count == 4 && output.nodes_per_zone == 2
    error_message = "expected 4 nodes, got ${output.node_count}"
  }
  assert {
    condition     = output.consumer_count == 2
    error_message = "the consumer floor (2) applies to a small sale, got ${output.consumer_count}"
  }
}

run "small_sale_gets_the_floor" {
  command = plan

  variables {
    peak_buyers_per_second = 100
    node_capacity_rps      = 10000
    winners_per_second     = 1
  }

  # One node of load, but at least one node per zone and min_nodes overall.
  assert {
    condition     = output.node_count == 3 && output.store_shards == 1
    error_message = "expected the floor of 3 nodes and 1 shard, got ${output.node_count} and ${output.store_shards}"
  }
}

run "several_hot_sales_share_shards" {
  command = plan

  variables {
    peak_buyers_per_second = 200000
    winners_per_second     = 4000
    hot_sales              = 4
  }

  # 9 nodes; (4000 x 4 + 9 x 4 x 10) x 1.5 = 24540 ops/s, 6135 per sale:
  # 3 sales fit one shard, so 4 sales need 2 shards.
  assert {
    condition     = output.node_count == 9
    error_message = "expected 9 nodes, got ${output.node_count}"
  }
  assert {
    condition     = output.sales_per_shard == 3 && output.store_shards == 2
    error_message = "expected 3 sales per shard and 2 shards, got ${output.sales_per_shard} and ${output.store_shards}"
  }
  assert {
    condition     = output.consumer_count == 30
    error_message = "expected 30 consumers, got ${output.consumer_count}"
  }
}

run "one_sale_too_hot_for_a_shard" {
  command = plan

  variables {
    winners_per_second = 10000
  }

  # 10000 x 4 x 1.5 = 60000 ops/s on one slot: no shard count can help.
  # Its CPU says the same: (10000 x (20 + 45 x 1) + 45 x 1000) x 1.5 µs/s is
  # more than a core.
  expect_failures = [output.store_shards, output.store_cpu_utilization]
}

run "rejects_zero_peak" {
  command = plan

  variables {
    peak_buyers_per_second = 0
  }

  expect_failures = [var.peak_buyers_per_second]
}

run "rejects_unmeasured_capacity" {
  command = plan

  variables {
    node_capacity_rps = 10
  }

  expect_failures = [var.node_capacity_rps]
}

run "rejects_thin_headroom" {
  command = plan

  variables {
    headroom = 0.05
  }

  expect_failures = [var.headroom]
}

run "rejects_single_zone_and_fractional_counts" {
  command = plan

  variables {
    availability_zones = 1
    hot_sales          = 1.5
    min_nodes          = 1
  }

  expect_failures = [
    var.availability_zones,
    var.hot_sales,
    var.min_nodes,
  ]
}

run "store_memory_from_the_measured_bytes_per_winner" {
  command = plan

  variables {
    units_per_sale         = 1000000
    store_bytes_per_winner = 1000
    sales_in_store         = 4
    shard_memory_bytes     = 10000000000
    store_memory_fill      = 0.6
  }

  # 1e6 units x 1000 B x 1.5 = 1.5 GB per sale; a shard may fill 6 GB, so it
  # holds 4 sales: 4 sales in one shard, 6 GB of 10 GB used.
  assert {
    condition     = output.store_memory_bytes == 6000000000
    error_message = "4 sales x 1.5 GB = 6 GB."
  }

  assert {
    condition     = output.store_shards == 1 && output.store_memory_utilization == 0.6
    error_message = "4 sales of 1.5 GB fit one 10 GB shard at 60%."
  }
}

run "store_memory_adds_shards" {
  command = plan

  variables {
    units_per_sale         = 1000000
    store_bytes_per_winner = 1000
    sales_in_store         = 5
    shard_memory_bytes     = 10000000000
    store_memory_fill      = 0.6
  }

  # A fifth sale does not fit the 6 GB a shard may fill: a second shard,
  # although one shard has the operations for every hot sale.
  assert {
    condition     = output.store_shards == 2 && output.store_memory_utilization == 0.45
    error_message = "5 sales of 1.5 GB need 2 shards; the fuller holds 3 (4.5 GB of 10)."
  }
}

run "one_sale_too_big_for_a_shard" {
  command = plan

  variables {
    units_per_sale         = 5000000
    store_bytes_per_winner = 1000
    shard_memory_bytes     = 10000000000
  }

  # 5e6 x 1000 x 1.5 = 7.5 GB > 60% of 10 GB, and a sale cannot be split.
  expect_failures = [output.store_memory_bytes]
}

run "store_cpu_from_the_measured_cost_per_winner" {
  command = plan

  # 45 nodes: a winner costs 20 + 45 x 1 = 65 µs; 2000 winners/s and 45
  # idle nodes at 1000 µs/s make (130000 + 45000) x 1.5 = 262500 µs/s,
  # 26.25% of a core, under the 50% target.
  assert {
    condition     = abs(output.store_cpu_utilization - 0.2625) < 0.000001 && output.store_shards == 1
    error_message = "expected 26.25% of one core on 1 shard, got ${output.store_cpu_utilization} on ${output.store_shards}"
  }

  # The sale's ceiling: (500000 / 1.5 - 45000) / 65 = 4435.9 winners/s.
  assert {
    condition     = floor(output.store_winners_per_second_cap) == 4435
    error_message = "expected a ceiling of 4435 winners/s, got ${output.store_winners_per_second_cap}"
  }
}

run "store_cpu_adds_shards_for_several_hot_sales" {
  command = plan

  variables {
    peak_buyers_per_second           = 200000
    winners_per_second               = 4000
    hot_sales                        = 4
    store_cpu_us_per_winner          = 200
    store_cpu_us_per_winner_per_node = 0
    store_cpu_us_per_node_second     = 0
  }

  # 1000 winners/s per sale x 200 µs x 1.5 = 30% of a core per sale: one
  # sale per shard under the 50% target, although the operations would let
  # 3 sales share a shard.
  assert {
    condition     = output.store_shards == 4 && abs(output.store_cpu_utilization - 0.3) < 0.000001
    error_message = "expected 4 shards at 30% each, got ${output.store_shards} at ${output.store_cpu_utilization}"
  }
}

run "fan_out_makes_a_large_fleet_too_hot_for_one_shard" {
  command = plan

  variables {
    node_capacity_rps = 5000
  }

  # 1.5M req/s over 5000 per node: 450 nodes. Each adds 1 µs to every
  # winner and 1000 µs/s of background: (2000 x 470 + 450000) x 1.5 µs/s
  # is two cores. A sale cannot be split, so the plan must refuse.
  assert {
    condition     = output.node_count == 450
    error_message = "expected 450 nodes, got ${output.node_count}"
  }

  expect_failures = [output.store_cpu_utilization]
}

run "rejects_unmeasured_store_cpu" {
  command = plan

  variables {
    store_cpu_us_per_winner = 0
    store_cpu_target        = 0.95
  }

  expect_failures = [
    var.store_cpu_us_per_winner,
    var.store_cpu_target,
  ]
}
