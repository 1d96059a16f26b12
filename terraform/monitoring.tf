# The fleet plan as Prometheus sees it. The "node count below plan" alert
# compares count(bigtap_node_info) with bigtap_fleet_planned_nodes, which only
# exists between the scheduled scale-up and scale-down, so the alert is quiet
# outside the sale window. Install the rendered file next to the static rules:
#   terraform output -raw prometheus_fleet_plan_rules > /etc/prometheus/rules/bigtap-fleet-plan.yml

locals {
  prometheus_fleet_plan_rules = templatefile("${path.module}/monitoring/fleet-plan.rules.yml.tftpl", {
    deployment     = var.name
    planned_nodes  = local.sale_node_count
    planned_orders = module.sizing.consumer_count
    window_start_s = module.scale_up_time.seconds
    window_end_s   = module.scale_down_time.seconds
  })
}
