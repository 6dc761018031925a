fn main() {
    afl::fuzz!(|data: &[u8]| trustmesh_fuzz::h1(data));
}
